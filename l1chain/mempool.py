"""The mempool: valid unconfirmed transactions, ordered by fee rate.

A transaction may spend outputs of other mempool transactions (its parents), up to
:data:`MAX_ANCESTORS` deep, as Bitcoin Core allows. First seen wins a conflict,
unless the newcomer pays a higher absolute fee than everything it replaces (the
conflicts and their descendants) and a higher fee rate than each direct conflict
(replace-by-fee, BIP 125's rules 3 and 4), so a stuck close can be bumped and a
justice transaction can outbid a cheater. Pure bookkeeping: validation is
``l1chain.rules``' and happens before :meth:`Mempool.add`.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from emulator.tx import OutPoint, Tx
from l1chain.errors import RejectReason, TxRejected
from l1chain.rules import Coin, Verdict, feerate_sat_per_kb

MAX_ANCESTORS = 25  # Bitcoin Core's default -limitancestorcount


@dataclass
class Entry:
    """One mempool transaction, its fee facts and its links to other entries."""

    tx: Tx
    txid: bytes
    fee_sat: int
    size: int
    arrival: int
    revoked_inputs: tuple[int, ...] = ()
    parents: set[bytes] = field(default_factory=set)  # unconfirmed txids it spends from
    children: set[bytes] = field(default_factory=set)

    @property
    def feerate(self) -> int:
        """Fee rate in sat per 1,000 bytes, rounded down."""
        return feerate_sat_per_kb(self.fee_sat, self.size)

    def sort_key(self) -> tuple[float, int]:
        """Best fee rate first, earliest first among equals."""
        return (-self.fee_sat / max(self.size, 1), self.arrival)

    def to_wire(self) -> dict:
        """The entry as a plain map."""
        return {"txid": self.txid, "fee_sat": self.fee_sat, "size": self.size,
                "feerate_sat_per_kb": self.feerate, "arrival": self.arrival,
                "parents": sorted(self.parents)}


class Mempool:
    """Unconfirmed transactions with spend and parent/child indexes."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.spends: dict[OutPoint, bytes] = {}  # outpoint -> mempool txid spending it
        self._arrivals = itertools.count()

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_bytes(self) -> int:
        """The size of all entries together."""
        return sum(e.size for e in self.entries.values())

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """An output of a mempool transaction (spent in the pool or not), or None."""
        entry = self.entries.get(outpoint.txid)
        if entry is None or outpoint.vout >= len(entry.tx.outputs):
            return None
        return Coin(outpoint, entry.tx.outputs[outpoint.vout], None)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        """The mempool transaction spending ``outpoint``, or None."""
        return self.spends.get(outpoint)

    def conflicts(self, tx: Tx) -> set[bytes]:
        """Txids in the pool that spend any input of ``tx``."""
        return {self.spends[i.outpoint] for i in tx.inputs if i.outpoint in self.spends}

    def descendants(self, txids: Iterable[bytes]) -> set[bytes]:
        """``txids`` (those in the pool) and every pool transaction spending from them."""
        found: set[bytes] = set()
        todo = [t for t in txids if t in self.entries]
        while todo:
            txid = todo.pop()
            if txid not in found:
                found.add(txid)
                todo.extend(self.entries[txid].children)
        return found

    def ancestors(self, txids: Iterable[bytes]) -> set[bytes]:
        """Every pool transaction that ``txids`` spend from, directly or not."""
        found: set[bytes] = set()
        todo = [p for t in txids if t in self.entries for p in self.entries[t].parents]
        while todo:
            txid = todo.pop()
            if txid not in found and txid in self.entries:
                found.add(txid)
                todo.extend(self.entries[txid].parents)
        return found

    def plan_add(self, tx: Tx, verdict: Verdict) -> set[bytes]:
        """Check the pool rules for ``tx``; return what it would replace, or raise."""
        txid = tx.txid
        if txid in self.entries:
            raise TxRejected(RejectReason.DUPLICATE, f"{txid.hex()} is already in the mempool")
        parents = set(verdict.unconfirmed_parents)
        ancestors = self.ancestors(parents) | parents
        if len(ancestors) + 1 > MAX_ANCESTORS:
            raise TxRejected(RejectReason.TOO_LONG_MEMPOOL_CHAIN, f"{len(ancestors)} unconfirmed "
                             f"ancestors; at most {MAX_ANCESTORS - 1} allowed")
        direct = self.conflicts(tx)
        if not direct:
            return set()
        replaced = self.descendants(direct)
        self._check_replacement(txid, verdict, direct, replaced, ancestors)
        return replaced

    def _check_replacement(self, txid: bytes, verdict: Verdict, direct: set[bytes],
                           replaced: set[bytes], ancestors: set[bytes]) -> None:
        names = ", ".join(t.hex()[:16] for t in sorted(direct))
        if ancestors & replaced:
            raise TxRejected(RejectReason.DOUBLE_SPEND, f"spends an output of {names}, "
                             "which it would replace", conflicts=sorted(direct))
        old_fee = sum(self.entries[t].fee_sat for t in replaced)
        old_rate = max(self.entries[t].feerate for t in direct)
        if verdict.fee_sat <= old_fee or verdict.feerate <= old_rate:
            raise TxRejected(
                RejectReason.DOUBLE_SPEND, f"conflicts with {names} in the mempool and does not "
                f"replace it: fee {verdict.fee_sat} sat must exceed {old_fee} sat and fee rate "
                f"{verdict.feerate} must exceed {old_rate} sat/kB", conflicts=sorted(direct))

    def add(self, tx: Tx, verdict: Verdict) -> list[bytes]:
        """Add a validated tx; return the txids it replaced (RBF) or raise TxRejected."""
        replaced = self.plan_add(tx, verdict)
        self.evict(replaced)
        txid = tx.txid
        parents = set(verdict.unconfirmed_parents)
        entry = Entry(tx, txid, verdict.fee_sat, verdict.size, next(self._arrivals),
                      verdict.revoked_inputs, parents)
        self.entries[txid] = entry
        for parent in parents:
            self.entries[parent].children.add(txid)
        for txin in tx.inputs:
            self.spends[txin.outpoint] = txid
        return sorted(replaced)

    def remove(self, txids: Iterable[bytes]) -> list[bytes]:
        """Remove entries (confirmed ones) without their descendants; return those removed."""
        removed = []
        for txid in txids:
            entry = self.entries.pop(txid, None)
            if entry is None:
                continue
            removed.append(txid)
            for txin in entry.tx.inputs:
                if self.spends.get(txin.outpoint) == txid:
                    del self.spends[txin.outpoint]
            for parent in entry.parents:
                if parent in self.entries:
                    self.entries[parent].children.discard(txid)
            for child in entry.children:
                if child in self.entries:
                    self.entries[child].parents.discard(txid)
        return removed

    def evict(self, txids: Iterable[bytes]) -> list[bytes]:
        """Remove entries and all their descendants; return every txid removed."""
        return self.remove(self.descendants(txids))

    def by_feerate(self) -> list[Entry]:
        """Entries, best fee rate first, earliest first among equals."""
        return sorted(self.entries.values(), key=Entry.sort_key)

    def in_arrival_order(self) -> list[Entry]:
        """Entries in the order they arrived (parents always before children)."""
        return sorted(self.entries.values(), key=lambda e: e.arrival)
