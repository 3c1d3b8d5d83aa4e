"""The HTLC ledger: which updates are in which commitment, for both sides of one channel.

Pure bookkeeping after Electrum's ``lnhtlc.HTLCManager`` (no sockets, files or keys). Each
update remembers the commitment number (ctn) at which it enters each side's commitment, so
any commitment can be rebuilt: revoked ones (to punish) as well as the latest (to sign).
BOLT 2: an update proposed by X enters Y's commitment with X's next ``commitment_signed``,
and X's own with Y's first ``commitment_signed`` after Y acked it (``revoke_and_ack``).
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from emulator.errors import DecodeError
from peers.htlc_types import (
    SIDES,
    CommitmentPending,
    FeeUpdateNotOpener,
    Htlc,
    HtlcAlreadyRemoved,
    HtlcNotLockedIn,
    InsufficientBalance,
    InvalidUpdate,
    NoPendingCommitment,
    NothingToSign,
    PendingUpdate,
    Side,
    UnexpectedHtlcId,
    UnknownCommitment,
    UnknownHtlc,
    UpdateKind,
)

WIRE_VERSION = 2
MEMO_MAX = 256  # answers about signed commitments kept (recent ones are asked again)
KEEP_REVOKED = 64  # revoked commitments still answerable (older history is pruned)


# --- records -----------------------------------------------------------------------------
Lock = dict[Side, int | None]  # the ctn at which an update enters each side's commitment


def _in(lock: Lock, subject: Side, ctn: int) -> bool:
    """Is the update with this lock part of subject's commitment ``ctn``?"""
    at = lock[subject]
    return at is not None and at <= ctn


@dataclass
class _HtlcEntry:
    offerer: Side
    htlc: Htlc
    added: Lock
    add_seq: int
    removal: UpdateKind | None = None  # SETTLE or FAIL, proposed by offerer.other
    removed: Lock = field(default_factory=lambda: dict.fromkeys(Side))
    remove_seq: int = -1


@dataclass
class _FeeEntry:
    feerate_per_kw: int
    lock: Lock
    seq: int


class _Ref(NamedTuple):
    """One update in the ledger: its kind, who proposed it, its lock, its record."""
    kind: UpdateKind
    proposer: Side
    lock: Lock
    seq: int
    item: _HtlcEntry | _FeeEntry


class HtlcLedger:
    """HTLCs, balances and feerates of both commitments of one channel, at every ctn."""

    def __init__(self, local_msat: int, remote_msat: int, feerate_per_kw: int,
                 local_is_opener: bool) -> None:
        if min(local_msat, remote_msat) < 0 or feerate_per_kw <= 0:
            raise InvalidUpdate("balances must be >= 0 and the feerate > 0")
        self.local_is_opener = local_is_opener
        self._initial_msat = {Side.LOCAL: local_msat, Side.REMOTE: remote_msat}
        self._oldest = dict.fromkeys(Side, 0)  # oldest unrevoked ctn
        self._pending = dict.fromkeys(Side, False)  # a newer commitment is signed, unrevoked
        self._next_id = dict.fromkeys(Side, 0)
        self._seq = 0  # the order in which this ledger saw updates (for retransmission)
        self._live: dict[tuple[Side, int], _HtlcEntry] = {}
        self._archive: dict[tuple[Side, int], _HtlcEntry] = {}  # removed from both, for good
        self._archived_msat = dict.fromkeys(Side, 0)  # the archive's net effect on balances
        self._pruned_msat = dict.fromkeys(Side, 0)  # the part of it no longer kept in detail
        self._floor = dict.fromkeys(Side, 0)  # the oldest ctn still answerable, per side
        self._fees = [_FeeEntry(feerate_per_kw, dict.fromkeys(Side, 0), 0)]
        # what changed since the last take_changes(): lets the owner persist one HTLC
        # record per change instead of the whole ledger each time
        self._dirty: set[tuple[Side, int]] = set()
        self._dropped: set[tuple[Side, int]] = set()
        # answers about signed commitments (ctn <= latest), which never change: the
        # checks of every new HTLC ask them again and again
        self._memo: dict[tuple, Any] = {}

    def _signed(self, subject: Side, ctn: int) -> bool:
        """Is ``ctn`` a signed commitment of subject's (its contents are settled)?"""
        return ctn <= self.ctn_latest(subject)

    def _remember(self, key: tuple, value: Any) -> Any:
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = value
        return value

    @property
    def opener(self) -> Side:
        """The side that opened the channel and pays the commitment fee."""
        return Side.LOCAL if self.local_is_opener else Side.REMOTE

    # --- updates ---------------------------------------------------------------------
    def send_add(self, amount_msat: int, payment_hash: bytes, cltv_expiry: int,
                 onion: bytes = b"") -> Htlc:
        """We offer an HTLC; it gets the next local id (0, 1, 2, ...)."""
        htlc = Htlc(self._next_id[Side.LOCAL], amount_msat, payment_hash, cltv_expiry, onion)
        self._add(Side.LOCAL, htlc)
        return htlc

    def recv_add(self, htlc: Htlc) -> None:
        """The remote offers an HTLC; its id must be exactly the next remote id."""
        self._add(Side.REMOTE, htlc)

    def send_settle(self, htlc_id: int) -> None:
        """We fulfill an HTLC the remote offered us."""
        self._remove(UpdateKind.SETTLE, Side.REMOTE, htlc_id)

    def recv_settle(self, htlc_id: int) -> None:
        """The remote fulfills an HTLC we offered."""
        self._remove(UpdateKind.SETTLE, Side.LOCAL, htlc_id)

    def send_fail(self, htlc_id: int) -> None:
        """We fail an HTLC the remote offered us."""
        self._remove(UpdateKind.FAIL, Side.REMOTE, htlc_id)

    def recv_fail(self, htlc_id: int) -> None:
        """The remote fails an HTLC we offered."""
        self._remove(UpdateKind.FAIL, Side.LOCAL, htlc_id)

    def send_fee(self, feerate_per_kw: int) -> None:
        """We send ``update_fee`` (only the opener may)."""
        self._fee(Side.LOCAL, feerate_per_kw)

    def recv_fee(self, feerate_per_kw: int) -> None:
        """The remote sends ``update_fee`` (only the opener may)."""
        self._fee(Side.REMOTE, feerate_per_kw)

    def _lock_new(self, proposer: Side) -> Lock:
        """A new update enters the other side's next commitment; its proposer's later."""
        self._seq += 1
        return {proposer: None, proposer.other: self.ctn_latest(proposer.other) + 1}

    def _add(self, offerer: Side, htlc: Htlc) -> None:
        expected_id = self._next_id[offerer]
        if htlc.htlc_id != expected_id:
            raise UnexpectedHtlcId(f"{offerer} HTLC id {htlc.htlc_id!r}, expected {expected_id}")
        if type(htlc.amount_msat) is not int or htlc.amount_msat <= 0 \
                or not isinstance(htlc.payment_hash, bytes) or len(htlc.payment_hash) != 32:
            raise InvalidUpdate(f"HTLC {htlc.htlc_id}: the amount must be > 0 and the payment "
                                "hash 32 bytes")
        receiver = offerer.other
        available_msat = self.balance_msat(offerer, receiver, self.ctn_latest(receiver) + 1)
        if htlc.amount_msat > available_msat:
            raise InsufficientBalance(f"HTLC of {htlc.amount_msat} msat, {offerer} has only "
                                      f"{available_msat} msat")
        lock = self._lock_new(offerer)
        self._live[(offerer, htlc.htlc_id)] = _HtlcEntry(offerer, htlc, lock, self._seq)
        self._dirty.add((offerer, htlc.htlc_id))
        self._dropped.discard((offerer, htlc.htlc_id))  # an id offered again after a drop
        self._next_id[offerer] += 1

    def _remove(self, kind: UpdateKind, offerer: Side, htlc_id: int) -> None:
        entry = self._live.get((offerer, htlc_id))
        gone = entry is None and type(htlc_id) is int and 0 <= htlc_id < self._next_id[offerer]
        if gone or (entry and entry.removal):  # ids below the next are archived or pruned
            raise HtlcAlreadyRemoved(f"{offerer} HTLC {htlc_id} is already settled or failed")
        if entry is None:
            raise UnknownHtlc(f"no {offerer} HTLC with id {htlc_id!r}")
        # BOLT 2: no fulfill or fail until irrevocably committed in both commitments.
        if not self._irrevocable(entry.added):
            raise HtlcNotLockedIn(f"HTLC {htlc_id} is not irrevocably committed on both sides")
        entry.removed = self._lock_new(offerer.other)
        entry.removal, entry.remove_seq = kind, self._seq
        self._dirty.add((offerer, htlc_id))

    def _fee(self, proposer: Side, feerate_per_kw: int) -> None:
        # BOLT 2: the node not responsible for paying the fee MUST NOT send update_fee.
        if proposer != self.opener:
            raise FeeUpdateNotOpener(f"update_fee from {proposer}, which did not open the channel")
        if type(feerate_per_kw) is not int or feerate_per_kw <= 0:
            raise InvalidUpdate(f"feerate must be a positive int: {feerate_per_kw!r}")
        self._fees.append(_FeeEntry(feerate_per_kw, self._lock_new(proposer), self._seq))

    # --- the commitment dance --------------------------------------------------------
    def send_commit(self) -> int:
        """We send ``commitment_signed``; returns the new REMOTE ctn."""
        return self._commit(Side.REMOTE)

    def recv_commit(self) -> int:
        """We receive ``commitment_signed``; returns the new LOCAL ctn."""
        return self._commit(Side.LOCAL)

    def send_revoke(self) -> None:
        """We send ``revoke_and_ack``, revoking our previous LOCAL commitment."""
        self._revoke(Side.LOCAL)

    def recv_revoke(self) -> None:
        """We receive ``revoke_and_ack``: the remote revoked its previous commitment."""
        self._revoke(Side.REMOTE)

    def _commit(self, subject: Side) -> int:
        # One unrevoked new commitment at a time: the next per-commitment point comes later.
        if self._pending[subject]:
            raise CommitmentPending(f"{subject} commitment {self._oldest[subject]} not revoked yet")
        # BOLT 2: MUST NOT send a commitment_signed that does not include any updates.
        if not self.has_changes_to_sign(subject):
            raise NothingToSign(f"no update for the {subject} commitment")
        self._pending[subject] = True
        return self.ctn_latest(subject)

    def _revoke(self, revoker: Side) -> None:
        if not self._pending[revoker]:
            raise NoPendingCommitment(f"no {revoker} commitment to revoke")
        self._pending[revoker] = False
        self._oldest[revoker] += 1
        # It acks the other side's updates in the now-current commitment: on to theirs.
        proposer, next_ctn = revoker.other, self.ctn_latest(revoker.other) + 1
        for ref in list(self._updates()):
            if ref.proposer == proposer and ref.lock[proposer] is None \
                    and _in(ref.lock, revoker, self._oldest[revoker]):
                ref.lock[proposer] = next_ctn
                if isinstance(ref.item, _HtlcEntry):
                    self._dirty.add((ref.item.offerer, ref.item.htlc.htlc_id))
        self._archive_removed()

    def _archive_removed(self) -> None:
        """Move HTLCs irrevocably removed from both commitments out of the live set."""
        for key, entry in list(self._live.items()):
            if entry.removal is None or not self._irrevocable(entry.removed):
                continue
            del self._live[key]
            if entry.htlc.onion:
                entry.htlc = dataclasses.replace(entry.htlc, onion=b"")  # not needed any more
                self._dirty.add(key)
            self._archive[key] = entry
            if entry.removal is UpdateKind.SETTLE:
                self._archived_msat[entry.offerer] -= entry.htlc.amount_msat
                self._archived_msat[entry.offerer.other] += entry.htlc.amount_msat
        self._prune()

    def _prune(self) -> None:
        """Forget archived HTLCs removed more than KEEP_REVOKED commitments ago, so
        the ledger (and every write of it) stays small however long the channel lives."""
        local_floor = max(self._floor[Side.LOCAL], self._oldest[Side.LOCAL] - KEEP_REVOKED)
        remote_floor = max(self._floor[Side.REMOTE], self._oldest[Side.REMOTE] - KEEP_REVOKED)
        # The archive is in the order its entries became irrevocable, which is nearly the
        # order they fall below the floors: stop at the first one still needed (a later
        # one waits at most a few commitments more) instead of scanning it every time.
        while self._archive:
            key, entry = next(iter(self._archive.items()))
            removed = entry.removed
            if not (removed[Side.LOCAL] is not None and removed[Side.LOCAL] < local_floor
                    and removed[Side.REMOTE] is not None
                    and removed[Side.REMOTE] < remote_floor):
                break
            del self._archive[key]
            self._dirty.discard(key)
            self._dropped.add(key)
            if entry.removal is UpdateKind.SETTLE:
                self._pruned_msat[entry.offerer] -= entry.htlc.amount_msat
                self._pruned_msat[entry.offerer.other] += entry.htlc.amount_msat
        self._floor = {Side.LOCAL: local_floor, Side.REMOTE: remote_floor}

    def _irrevocable(self, lock: Lock) -> bool:
        """Is the update in both sides' current commitments, their previous ones revoked?"""
        return all(_in(lock, side, self._oldest[side]) for side in SIDES)

    def _updates(self) -> Iterator[_Ref]:
        """Every update not yet irrevocable on both sides (and some that are)."""
        for entry in self._live.values():
            yield _Ref(UpdateKind.ADD, entry.offerer, entry.added, entry.add_seq, entry)
            if entry.removal is not None:
                yield _Ref(entry.removal, entry.offerer.other, entry.removed,
                           entry.remove_seq, entry)
        for fee in reversed(self._fees):
            if self._irrevocable(fee.lock):
                break  # fee locks only grow along the list: the earlier ones are too
            yield _Ref(UpdateKind.FEE, self.opener, fee.lock, fee.seq, fee)

    # --- reconnection ----------------------------------------------------------------
    def discard_unsigned_updates(self, proposer: Side) -> None:
        """Forget proposer's updates that no ``commitment_signed`` covered (reconnection)."""
        subject = proposer.other
        latest = self.ctn_latest(subject)
        for key, entry in list(self._live.items()):
            if entry.offerer == proposer and not _in(entry.added, subject, latest):
                del self._live[key]
                self._dirty.discard(key)
                self._dropped.add(key)
                self._next_id[proposer] = min(self._next_id[proposer], entry.htlc.htlc_id)
            elif entry.offerer == subject and entry.removal is not None \
                    and not _in(entry.removed, subject, latest):
                entry.removal, entry.removed, entry.remove_seq = None, dict.fromkeys(Side), -1
                self._dirty.add(key)
        if proposer == self.opener:
            self._fees = [fee for fee in self._fees if _in(fee.lock, subject, latest)]

    def unacked_local_updates(self) -> list[PendingUpdate]:
        """Our updates the remote has not irrevocably committed, in the order we sent them."""
        refs = [ref for ref in self._updates()
                if ref.proposer == Side.LOCAL and ref.lock[Side.LOCAL] is None]
        return [_pending_update(ref) for ref in sorted(refs, key=lambda ref: ref.seq)]

    # --- queries ---------------------------------------------------------------------
    def ctn_latest(self, subject: Side) -> int:
        """The newest signed commitment number of subject's commitment."""
        return self._oldest[subject] + int(self._pending[subject])

    def ctn_oldest_unrevoked(self, subject: Side) -> int:
        """The oldest commitment number of subject's that is not revoked yet."""
        return self._oldest[subject]

    def awaiting_revoke(self) -> bool:
        """We sent ``commitment_signed`` and no ``revoke_and_ack`` came yet."""
        return self._pending[Side.REMOTE]

    def has_changes_to_sign(self, subject: Side) -> bool:
        """Would a ``commitment_signed`` for subject's commitment include any update?"""
        next_ctn = self.ctn_latest(subject) + 1
        return any(ref.lock[subject] == next_ctn for ref in self._updates())

    def get_htlc(self, offerer: Side, htlc_id: int) -> Htlc | None:
        """The HTLC the offerer offered with this id, or None if there is none."""
        entry = self._live.get((offerer, htlc_id)) or self._archive.get((offerer, htlc_id))
        return None if entry is None else entry.htlc

    def irrevocably_added(self, offerer: Side) -> list[int]:
        """Ids of the offerer's HTLCs irrevocably in both commitments and not being removed."""
        return sorted(entry.htlc.htlc_id for entry in self._live.values()
                      if entry.offerer == offerer and entry.removal is None
                      and self._irrevocable(entry.added))

    def htlcs(self, subject: Side, ctn: int | None = None) -> list[tuple[Side, Htlc]]:
        """HTLCs in subject's commitment at ctn (default latest), each with its offerer."""
        ctn = self._check_ctn(subject, ctn)
        key = ("htlcs", subject, ctn)
        known = self._memo.get(key)
        if known is not None:
            return list(known)
        entries, _ = self._entries(subject, ctn)
        found = [(entry.offerer, entry.htlc) for entry in entries
                 if _in(entry.added, subject, ctn) and not _in(entry.removed, subject, ctn)]
        found.sort(key=lambda pair: (pair[0] != subject, pair[1].htlc_id))  # offered first
        if self._signed(subject, ctn):
            self._remember(key, tuple(found))
        return found

    def htlcs_pending(self, subject: Side) -> list[tuple[Side, Htlc]]:
        """HTLCs added for subject's next commitment that its latest one lacks."""
        # exactly those whose add enters subject's commitments at the next number (an
        # HTLC cannot be removed before its add is irrevocable, so none is gone again)
        next_ctn = self.ctn_latest(subject) + 1
        found = [(entry.offerer, entry.htlc) for entry in self._live.values()
                 if entry.added[subject] == next_ctn]
        found.sort(key=lambda pair: (pair[0] != subject, pair[1].htlc_id))  # as htlcs()
        return found

    def balance_msat(self, whose: Side, subject: Side, ctn: int | None = None) -> int:
        """whose's balance in subject's commitment at ctn, without HTLCs in flight and fees."""
        ctn = self._check_ctn(subject, ctn)
        key = ("balance", whose, subject, ctn)
        known = self._memo.get(key)
        if known is not None:
            return known
        entries, applied_msat = self._entries(subject, ctn)
        balance_msat = self._initial_msat[whose] + applied_msat[whose]
        for entry in entries:
            if not _in(entry.added, subject, ctn):
                continue
            removed = _in(entry.removed, subject, ctn)
            if entry.offerer == whose and not (removed and entry.removal is UpdateKind.FAIL):
                balance_msat -= entry.htlc.amount_msat
            elif entry.offerer != whose and removed and entry.removal is UpdateKind.SETTLE:
                balance_msat += entry.htlc.amount_msat
        if self._signed(subject, ctn):
            self._remember(key, balance_msat)
        return balance_msat

    def in_flight(self, subject: Side, ctn: int | None = None) -> dict[str, int]:
        """Totals of the HTLCs in subject's commitment, offered by and to the subject."""
        pairs = self.htlcs(subject, ctn)
        return {"offered_msat": sum(h.amount_msat for side, h in pairs if side == subject),
                "received_msat": sum(h.amount_msat for side, h in pairs if side != subject)}

    def feerate(self, subject: Side, ctn: int | None = None) -> int:
        """The feerate (sat per 1000 weight) of subject's commitment at ctn."""
        ctn = self._check_ctn(subject, ctn)
        return next(fee.feerate_per_kw for fee in reversed(self._fees)
                    if _in(fee.lock, subject, ctn))  # the opening feerate is in every one

    def _check_ctn(self, subject: Side, ctn: int | None) -> int:
        """The ctn to query: by default the latest; the next (unsigned) one is allowed too."""
        latest = self.ctn_latest(subject)
        if ctn is None:
            return latest
        if type(ctn) is not int or not self._floor[subject] <= ctn <= latest + 1:
            raise UnknownCommitment(f"no {subject} commitment {ctn!r} kept: latest is "
                                    f"{latest}, oldest kept {self._floor[subject]}")
        return ctn

    def _entries(self, subject: Side, ctn: int) -> tuple[Iterable[_HtlcEntry], dict[Side, int]]:
        """The HTLC entries that matter at ctn, and what the others add to the balances."""
        if ctn >= self._oldest[subject]:  # the archive is fully applied from here on
            return self._live.values(), self._archived_msat
        return itertools.chain(self._archive.values(), self._live.values()), self._pruned_msat

    def ctn_floor(self, subject: Side) -> int:
        """The oldest commitment number of subject's that can still be rebuilt."""
        return self._floor[subject]

    # --- persistence -----------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """The whole ledger as a plain msgpack-able dict; pairs are [local, remote]."""
        entries = itertools.chain(self._archive.values(), self._live.values())
        return {**self.header_to_wire(), "htlcs": [_entry_out(entry) for entry in entries]}

    def header_to_wire(self) -> dict[str, Any]:
        """Everything but the HTLC records (those persist one by one: take_changes)."""
        return {
            "version": WIRE_VERSION, "local_is_opener": self.local_is_opener, "seq": self._seq,
            "initial_msat": _pair_out(self._initial_msat), "ctn_oldest": _pair_out(self._oldest),
            "commit_pending": _pair_out(self._pending), "next_htlc_id": _pair_out(self._next_id),
            "fees": [[fee.feerate_per_kw, _pair_out(fee.lock), fee.seq] for fee in self._fees],
            "pruned_msat": _pair_out(self._pruned_msat), "floor": _pair_out(self._floor),
        }

    def take_changes(self) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """HTLC records written or changed, and (offerer, id) keys of records dropped,
        since the last call: persist them with ``header_to_wire()`` in one transaction."""
        changed = [_entry_out(entry) for key in sorted(self._dirty)
                   if (entry := self._live.get(key) or self._archive.get(key)) is not None]
        dropped = [(int(side), htlc_id) for side, htlc_id in sorted(self._dropped)]
        self._dirty.clear()
        self._dropped.clear()
        return changed, dropped

    def restore_changes(self, changed: list[dict[str, Any]],
                        dropped: list[tuple[int, int]]) -> None:
        """Undo a take_changes() whose write failed: those records are dirty again."""
        self._dirty.update((Side(obj["offerer"]), obj["htlc"]["htlc_id"]) for obj in changed)
        self._dropped.update((Side(side), htlc_id) for side, htlc_id in dropped)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> HtlcLedger:
        """Rebuild a ledger from ``to_wire()``'s output (or a header and its records
        under ``"htlcs"``)."""
        try:
            if obj["version"] != WIRE_VERSION:
                raise DecodeError(f"ledger version {obj['version']!r}, not {WIRE_VERSION}")
            initial = _pair_in(obj["initial_msat"])
            fees = [_FeeEntry(rate, _pair_in(lock), seq) for rate, lock, seq in obj["fees"]]
            ledger = cls(initial[Side.LOCAL], initial[Side.REMOTE], fees[0].feerate_per_kw,
                         bool(obj["local_is_opener"]))
            ledger._fees, ledger._seq = fees, obj["seq"]
            ledger._oldest, ledger._pending, ledger._next_id = (
                _pair_in(obj[key]) for key in ("ctn_oldest", "commit_pending", "next_htlc_id"))
            ledger._pruned_msat = _pair_in(obj["pruned_msat"])
            ledger._archived_msat = dict(ledger._pruned_msat)
            ledger._floor = _pair_in(obj["floor"])
            # in the order the updates were made, as the live set always is
            for entry in sorted(map(_entry_in, obj["htlcs"]), key=_removal_order):
                ledger._live[(entry.offerer, entry.htlc.htlc_id)] = entry
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DecodeError(f"malformed ledger: {exc!r}") from None
        ledger._dirty.clear()
        ledger._archive_removed()  # what this moves or prunes is written by the next save
        return ledger


def _removal_order(entry: _HtlcEntry) -> tuple[int, int]:
    """Removed entries first, by when they were removed, then the others as added: the
    archive they move to stays in about the order its entries can be pruned."""
    return (0, entry.remove_seq) if entry.removal is not None else (1, entry.add_seq)


def _pending_update(ref: _Ref) -> PendingUpdate:
    remote_ctn = ref.lock[Side.REMOTE]
    assert remote_ctn is not None  # our updates enter the remote commitment first
    if isinstance(ref.item, _FeeEntry):
        return PendingUpdate(ref.kind, remote_ctn, feerate_per_kw=ref.item.feerate_per_kw)
    htlc = ref.item.htlc
    return PendingUpdate(ref.kind, remote_ctn, htlc_id=htlc.htlc_id,
                         htlc=htlc if ref.kind is UpdateKind.ADD else None)


def _pair_out(pair: dict[Side, Any]) -> list[Any]:
    return [pair[Side.LOCAL], pair[Side.REMOTE]]


def _pair_in(obj: list[Any]) -> dict[Side, Any]:
    local, remote = obj
    return {Side.LOCAL: local, Side.REMOTE: remote}


def _entry_out(entry: _HtlcEntry) -> dict[str, Any]:
    h = entry.htlc
    return {"offerer": int(entry.offerer),
            "htlc": {"htlc_id": h.htlc_id, "amount_msat": h.amount_msat,
                     "payment_hash": h.payment_hash, "cltv_expiry": h.cltv_expiry,
                     "onion": h.onion},
            "added": _pair_out(entry.added), "add_seq": entry.add_seq,
            "removal": None if entry.removal is None else entry.removal.value,
            "removed": _pair_out(entry.removed), "remove_seq": entry.remove_seq}


def _entry_in(obj: dict[str, Any]) -> _HtlcEntry:
    removal = None if obj["removal"] is None else UpdateKind(obj["removal"])
    return _HtlcEntry(Side(obj["offerer"]), Htlc(**obj["htlc"]), _pair_in(obj["added"]),
                      obj["add_seq"], removal, _pair_in(obj["removed"]), obj["remove_seq"])
