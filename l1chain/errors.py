"""Typed errors of the chain: why a transaction is refused, and what else can go wrong."""
from __future__ import annotations

from enum import StrEnum
from typing import Any

from emulator.errors import BadRequest, LnemuError


class RejectReason(StrEnum):
    """Why a transaction may not enter the mempool or a block (``TxRejected.reason``)."""

    MALFORMED = "malformed"  # does not parse (wire form, policy or witness format)
    OVERSIZED = "oversized"  # larger than the standard size or than a block can hold
    NO_INPUTS = "no_inputs"  # only coinbases may spend nothing
    NO_OUTPUTS = "no_outputs"
    MISSING_WITNESS = "missing_witness"  # not one witness per input
    DUPLICATE_INPUT = "duplicate_input"
    NEGATIVE_AMOUNT = "negative_amount"
    AMOUNT_OVERFLOW = "amount_overflow"  # an output or the sum above the money supply
    DUST = "dust"
    NON_FINAL = "non_final"  # locktime above the height of the next block (BIP 65)
    MISSING_INPUT = "missing_input"  # the spent output does not exist
    SPENT_INPUT = "spent_input"  # the spent output was spent by a confirmed transaction
    OUTPUTS_EXCEED_INPUTS = "outputs_exceed_inputs"
    POLICY = "policy"  # a witness does not satisfy the spent output's policy
    DOUBLE_SPEND = "double_spend"  # conflicts with the mempool and does not replace it
    DUPLICATE = "duplicate"  # already in the mempool
    ALREADY_CONFIRMED = "already_confirmed"
    TOO_LONG_MEMPOOL_CHAIN = "too_long_mempool_chain"  # too many unconfirmed ancestors


class TxRejected(LnemuError):
    """A transaction refused; ``reason`` is a :class:`RejectReason`, ``details`` more facts.

    For ``policy`` the details name the input, the branch, the policy's own reason
    (``bad_signature``, ``wrong_preimage``, ``relative_timelock`` ...) and, for a
    timelock, ``blocks_needed``; for ``non_final`` they give ``blocks_needed`` too.
    """

    code = "tx_rejected"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = RejectReason(reason)
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The rejection as a plain map for RPC results and events."""
        return {"reason": str(self.reason), "message": str(self), **self.details}


class ChainError(LnemuError):
    """A chain operation that cannot be done in the chain's current state."""

    code = "chain_error"


class BadBlock(ChainError):
    """A block that does not fit the chain (wrong height or parent, missing input)."""

    code = "bad_block"


class GenesisMismatch(ChainError):
    """The stored chain was made from other genesis allocations than the config's."""

    code = "genesis_mismatch"


class StoreCorrupt(ChainError):
    """The stored chain cannot be loaded (and could not be repaired)."""

    code = "store_corrupt"


class BadFaultRequest(BadRequest):
    """A fault operation with arguments the chain cannot honour (e.g. reorg too deep)."""

    code = "bad_request"
