"""The HTLC ledger's vocabulary: the two sides, the kinds of update, an HTLC as offered,
and the typed errors of a step the ledger's state does not allow."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from emulator.errors import LnemuError


class Side(IntEnum):
    """One end of the channel, as seen from this ledger."""
    LOCAL = 1
    REMOTE = -1

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side.REMOTE if self is Side.LOCAL else Side.LOCAL

    def __str__(self) -> str:
        return self.name.lower()


SIDES = (Side.LOCAL, Side.REMOTE)  # iterating the enum itself is slow on hot paths


class UpdateKind(StrEnum):
    """The kinds of channel update the ledger tracks."""
    ADD = "add"
    SETTLE = "settle"
    FAIL = "fail"
    FEE = "fee"


@dataclass(frozen=True)
class Htlc:
    """An HTLC as offered by ``update_add_htlc``."""
    htlc_id: int
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int
    onion: bytes = b""


@dataclass(frozen=True)
class PendingUpdate:
    """An update we proposed that the remote has not irrevocably committed yet."""
    kind: UpdateKind
    remote_ctn: int  # the REMOTE commitment it enters; > ctn_latest(REMOTE): not signed yet
    htlc_id: int | None = None  # ADD, SETTLE, FAIL
    htlc: Htlc | None = None  # ADD
    feerate_per_kw: int | None = None  # FEE


# --- errors ------------------------------------------------------------------------------
class HtlcLedgerError(LnemuError):
    """An update or commitment step that the ledger's state does not allow."""
    code = "htlc_ledger"


class UnexpectedHtlcId(HtlcLedgerError):
    """An ``update_add_htlc`` whose id is not exactly the next one (BOLT 2)."""
    code = "htlc_id_unexpected"


class InvalidUpdate(HtlcLedgerError):
    """A malformed update: amount or feerate not positive, payment hash not 32 bytes."""
    code = "invalid_update"


class InsufficientBalance(HtlcLedgerError):
    """An HTLC larger than the offerer's balance in the receiver's next commitment."""
    code = "insufficient_balance"


class UnknownHtlc(HtlcLedgerError):
    """A settle or fail naming an HTLC that was never offered."""
    code = "htlc_unknown"


class HtlcNotLockedIn(HtlcLedgerError):
    """A settle or fail before the HTLC is irrevocably committed on both sides (BOLT 2)."""
    code = "htlc_not_locked_in"


class HtlcAlreadyRemoved(HtlcLedgerError):
    """A second settle or fail of the same HTLC."""
    code = "htlc_already_removed"


class FeeUpdateNotOpener(HtlcLedgerError):
    """An ``update_fee`` from the side that does not pay the fee (BOLT 2)."""
    code = "fee_update_not_opener"


class NothingToSign(HtlcLedgerError):
    """A ``commitment_signed`` that includes no update (BOLT 2)."""
    code = "nothing_to_sign"


class CommitmentPending(HtlcLedgerError):
    """A ``commitment_signed`` while the previous one for that side is not revoked yet."""
    code = "commitment_pending"


class NoPendingCommitment(HtlcLedgerError):
    """A ``revoke_and_ack`` with no newer commitment to replace the revoked one."""
    code = "no_pending_commitment"


class UnknownCommitment(HtlcLedgerError):
    """A query for a commitment number that does not exist (yet)."""
    code = "unknown_commitment"
