"""The mempool: valid unconfirmed transactions, ordered by fee rate.

First seen wins a conflict, unless the newcomer pays both a higher absolute fee and
a higher fee rate than everything it replaces (replace-by-fee), so a stuck close
can be bumped and a justice transaction can outbid a cheater.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from emulator.tx import OutPoint, Tx
from l1chain.ledger import TxRejected


@dataclass
class Entry:
    tx: Tx
    fee_sat: int
    size: int
    arrival: int
    txid: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.txid = self.tx.txid

    @property
    def feerate(self) -> float:
        """Fee rate in sat per 1,000 bytes."""
        return self.fee_sat * 1000 / max(self.size, 1)


class Mempool:
    """Unconfirmed transactions with a spend index for conflict checks."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.spends: dict[OutPoint, bytes] = {}
        self._arrivals = itertools.count()

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def conflicts(self, tx: Tx) -> set[bytes]:
        """Txids in the pool that spend any input of ``tx``."""
        return {self.spends[i.outpoint] for i in tx.inputs if i.outpoint in self.spends}

    def add(self, tx: Tx, fee_sat: int) -> list[bytes]:
        """Add a validated tx; return the txids it replaced (RBF) or raise TxRejected."""
        txid = tx.txid
        if txid in self.entries:
            raise TxRejected("duplicate", f"{txid.hex()} is already in the mempool")
        entry = Entry(tx, fee_sat, tx.size, next(self._arrivals))
        replaced = self.conflicts(tx)
        if replaced:
            old = [self.entries[t] for t in replaced]
            old_fee = sum(e.fee_sat for e in old)
            if fee_sat <= old_fee or entry.feerate <= max(e.feerate for e in old):
                raise TxRejected("double_spend", "conflicts with "
                                 f"{', '.join(t.hex()[:16] for t in replaced)} in the mempool "
                                 f"and does not pay more (fee {fee_sat} ≤ {old_fee} sat "
                                 "or lower fee rate)")
            self.remove(replaced)
        self.entries[txid] = entry
        for txin in tx.inputs:
            self.spends[txin.outpoint] = txid
        return sorted(replaced)

    def remove(self, txids: set[bytes] | list[bytes]) -> None:
        for txid in txids:
            entry = self.entries.pop(txid, None)
            if entry is None:
                continue
            for txin in entry.tx.inputs:
                if self.spends.get(txin.outpoint) == txid:
                    del self.spends[txin.outpoint]

    def by_feerate(self) -> list[Entry]:
        """Entries, best fee rate first, earliest first among equals."""
        return sorted(self.entries.values(), key=lambda e: (-e.feerate, e.arrival))
