"""Validation: every rule that decides whether a transaction may enter a block.

Pure functions over a :class:`CoinView` (the confirmed UTXO set, seen through the
mempool or through the block being built). Every failure raises
:class:`~l1chain.errors.TxRejected` with its reason; nothing else decides validity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from emulator import policy
from emulator.tx import MAX_MONEY_SAT, OutPoint, Tx, TxOut, blocks_until_final, is_final, sighash
from l1chain.errors import RejectReason, TxRejected

DUST_LIMIT_SAT = 330  # BOLT 3's dust limit for P2WSH outputs
# Bitcoin's standard limit is 400,000 weight units; a justice transaction sweeping a
# commitment with 966 HTLC outputs needs ~190 bytes per input here.
MAX_STANDARD_TX_BYTES = 400_000
MAX_SUPPLY_SAT = MAX_MONEY_SAT


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output and the height that confirmed it (None: still unconfirmed)."""

    outpoint: OutPoint
    txout: TxOut
    height: int | None

    def to_wire(self) -> dict[str, Any]:
        """The coin as a plain map."""
        return {"txid": self.outpoint.txid, "vout": self.outpoint.vout,
                "amount_sat": self.txout.amount_sat, "cond": self.txout.cond,
                "height": self.height}


@dataclass(frozen=True)
class Verdict:
    """What validation learned about a valid transaction."""

    fee_sat: int
    size: int
    revoked_inputs: tuple[int, ...] = ()  # inputs spent through a revocation branch
    unconfirmed_parents: frozenset[bytes] = frozenset()  # txids of unconfirmed coins spent

    @property
    def feerate(self) -> int:
        """Fee rate in sat per 1,000 bytes (rounded down)."""
        return feerate_sat_per_kb(self.fee_sat, self.size)


class CoinView(Protocol):
    """Where validation looks up the outputs a transaction spends."""

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """The unspent output, or None."""

    def spender(self, outpoint: OutPoint) -> bytes | None:
        """The txid that already spent ``outpoint`` in this view, if known."""


def feerate_sat_per_kb(fee_sat: int, size: int) -> int:
    """A fee rate in sat per 1,000 bytes, rounded down."""
    return fee_sat * 1000 // max(size, 1)


def check_shape(tx: Tx, max_tx_bytes: int = MAX_STANDARD_TX_BYTES) -> int:
    """Context-free checks (size, inputs, outputs, witnesses, amounts); return the size."""
    size = tx.size
    if size > max_tx_bytes:
        raise TxRejected(RejectReason.OVERSIZED, f"{size} bytes > the limit of {max_tx_bytes}",
                         size=size, limit=max_tx_bytes)
    if not tx.inputs:
        raise TxRejected(RejectReason.NO_INPUTS, "a transaction must spend at least one output")
    if not tx.outputs:
        raise TxRejected(RejectReason.NO_OUTPUTS, "a transaction must have at least one output")
    if len(tx.witnesses) != len(tx.inputs):
        raise TxRejected(RejectReason.MISSING_WITNESS,
                         f"{len(tx.witnesses)} witnesses for {len(tx.inputs)} inputs")
    _check_outputs(tx.outputs)
    return size


def _check_outputs(outputs: list[TxOut]) -> int:
    total_sat = 0
    for j, out in enumerate(outputs):
        amount = out.amount_sat
        if type(amount) is not int or amount < 0:
            raise TxRejected(RejectReason.NEGATIVE_AMOUNT, f"output {j} has amount {amount!r}",
                             output=j)
        if amount > MAX_SUPPLY_SAT:
            raise TxRejected(RejectReason.AMOUNT_OVERFLOW, f"output {j} of {amount} sat exceeds "
                             f"the money supply", output=j)
        if amount < DUST_LIMIT_SAT:
            raise TxRejected(RejectReason.DUST, f"output {j} of {amount} sat is below the dust "
                             f"limit of {DUST_LIMIT_SAT}", output=j)
        total_sat += amount
        if total_sat > MAX_SUPPLY_SAT:
            raise TxRejected(RejectReason.AMOUNT_OVERFLOW, "outputs exceed the money supply")
    return total_sat


def check_tx(tx: Tx, spend_height: int, view: CoinView,
             max_tx_bytes: int = MAX_STANDARD_TX_BYTES) -> Verdict:
    """Validate ``tx`` for a block at ``spend_height``; raise TxRejected if invalid."""
    size = check_shape(tx, max_tx_bytes)
    if not is_final(tx, spend_height):
        needed = blocks_until_final(tx, spend_height)
        raise TxRejected(RejectReason.NON_FINAL, f"absolute timelock not reached: locktime "
                         f"{tx.locktime} is above height {spend_height}, {needed} more blocks "
                         "needed", blocks_needed=needed, locktime=tx.locktime)
    coins = _input_coins(tx, view)
    total_in = sum(c.txout.amount_sat for c in coins)
    total_out = sum(out.amount_sat for out in tx.outputs)
    if total_out > total_in:
        raise TxRejected(RejectReason.OUTPUTS_EXCEED_INPUTS,
                         f"outputs {total_out} sat > inputs {total_in} sat")
    revoked = tuple(i for i, coin in enumerate(coins)
                    if _check_input(tx, i, coin, spend_height))
    parents = frozenset(c.outpoint.txid for c in coins if c.height is None)
    return Verdict(total_in - total_out, size, revoked, parents)


def _input_coins(tx: Tx, view: CoinView) -> list[Coin]:
    seen: set[OutPoint] = set()
    coins = []
    for i, txin in enumerate(tx.inputs):
        op = txin.outpoint
        if op in seen:
            raise TxRejected(RejectReason.DUPLICATE_INPUT, f"input {i} spends {op} twice",
                             input=i)
        seen.add(op)
        coin = view.coin(op)
        if coin is None:
            spender = view.spender(op)
            if spender is not None:
                raise TxRejected(RejectReason.SPENT_INPUT, f"input {i}: {op} was already spent "
                                 f"by {spender.hex()}", input=i, spender=spender)
            raise TxRejected(RejectReason.MISSING_INPUT, f"input {i}: {op} is unknown",
                             input=i)
        coins.append(coin)
    return coins


def _check_input(tx: Tx, index: int, coin: Coin, spend_height: int) -> bool:
    """Evaluate input ``index`` against its policy; True if a revocation branch was used."""
    out = coin.txout
    # An unconfirmed coin can at best confirm in the same block as its spender.
    confirmed = spend_height if coin.height is None else coin.height
    ctx = policy.SpendContext(
        sighash=sighash(tx, index, out.amount_sat, out.cond), locktime=tx.locktime,
        sequence=tx.inputs[index].sequence, spend_height=spend_height,
        confirmed_height=confirmed)
    try:
        result = policy.evaluate(out.cond, tx.witnesses[index], ctx)
    except policy.PolicyNotSatisfied as exc:
        details: dict[str, Any] = {"input": index, "branch": exc.branch,
                                   "policy_reason": str(exc.reason)}
        if exc.blocks_needed is not None:
            details["blocks_needed"] = exc.blocks_needed
        raise TxRejected(RejectReason.POLICY, f"input {index}: {exc}", **details) from None
    except policy.PolicyFormatError as exc:  # a stored cond is checked at parse time
        raise TxRejected(RejectReason.MALFORMED, f"input {index}: {exc}", input=index) from None
    return result.revocation
