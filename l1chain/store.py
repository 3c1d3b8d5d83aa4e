"""The chain's SQLite store (``chain.sqlite``, WAL): blocks, undo data, indexes, mempool.

Each block is written in one SQLite transaction together with its effect on the
UTXO set, the tx index and the spend index, so a restart loads those tables instead
of replaying every block. WAL with ``synchronous=NORMAL`` loses nothing to a process
kill (only an OS crash can lose the last commits, never half of one). On load the
header chain is checked (heights, links, hashes) and the last record's checksum;
a torn or partial record is dropped and the indexes are rebuilt from the good blocks.
The mempool is kept too (like Bitcoin Core's mempool.dat) and re-validated on load.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgpack

from emulator.tx import OutPoint, TxOut
from l1chain.block import Block, Header
from l1chain.errors import GenesisMismatch, StoreCorrupt
from l1chain.ledger import Ledger, MemoryArchive, Snapshot, block_delta
from l1chain.mempool import Entry
from l1chain.rules import Coin

log = logging.getLogger("chain.store")

FORMAT_VERSION = 1
CACHE_BLOCKS = 512
_HEADER_COLUMNS = "height, hash, prev_hash, time, tx_root, nonce, size, tx_count, fees_sat, min_feerate"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, prev_hash BLOB NOT NULL,
    time REAL NOT NULL, tx_root BLOB NOT NULL, nonce INTEGER NOT NULL, size INTEGER NOT NULL,
    tx_count INTEGER NOT NULL, fees_sat INTEGER NOT NULL, min_feerate INTEGER,
    body BLOB NOT NULL, undo BLOB NOT NULL, checksum BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    txid BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS utxos (
    txid BLOB NOT NULL, vout INTEGER NOT NULL, height INTEGER NOT NULL,
    amount_sat INTEGER NOT NULL, cond BLOB NOT NULL, PRIMARY KEY (txid, vout)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spends (
    txid BLOB NOT NULL, vout INTEGER NOT NULL, spender BLOB NOT NULL,
    PRIMARY KEY (txid, vout)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mempool (
    txid BLOB PRIMARY KEY, arrival INTEGER NOT NULL, raw BLOB NOT NULL) WITHOUT ROWID;
"""


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _checksum(body: bytes, undo: bytes) -> bytes:
    return hashlib.sha256(len(body).to_bytes(8, "big") + body + undo).digest()


def encode_undo(undo: list[Coin]) -> bytes:
    """The coins a block spent, as msgpack."""
    return _pack([[c.outpoint.txid, c.outpoint.vout, c.txout.amount_sat, c.txout.cond,
                   c.height] for c in undo])


def decode_undo(data: bytes) -> list[Coin]:
    """The inverse of :func:`encode_undo`."""
    return [Coin(OutPoint(txid, vout), TxOut(amount, cond), height)
            for txid, vout, amount, cond, height in msgpack.unpackb(data, raw=False)]


class ChainStore:
    """Blocks, undo data, indexes and mempool in one SQLite file; the ledger's archive."""

    def __init__(self, path: str | Path, cache_blocks: int = CACHE_BLOCKS) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.cache: OrderedDict[int, Block] = OrderedDict()
        self.cache_blocks = cache_blocks

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One SQLite transaction around everything inside (nested batches join it)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            self.cache.clear()  # it may hold blocks of the rolled-back transaction
            raise
        self.db.execute("COMMIT")

    def is_empty(self) -> bool:
        """True if no block has been stored yet."""
        return self.db.execute("SELECT 1 FROM blocks LIMIT 1").fetchone() is None

    def meta(self, key: str) -> bytes | int | None:
        """A value from the meta table, or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: bytes | int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def check_genesis(self, genesis_txid: bytes) -> None:
        """Raise GenesisMismatch unless the stored chain starts with ``genesis_txid``."""
        stored = self.meta("genesis_txid")
        if stored != genesis_txid:
            shown = stored.hex() if isinstance(stored, bytes) else stored
            raise GenesisMismatch(f"{self.path} holds a chain whose genesis transaction is "
                                  f"{shown}, but the config's allocations give "
                                  f"{genesis_txid.hex()}; use another data dir")

    # --- the archive ----------------------------------------------------------------
    def append(self, block: Block, undo: list[Coin]) -> None:
        """Store ``block`` and its effect on the indexes in one transaction."""
        body, undo_data = block.encode_body(), encode_undo(undo)
        h = block.header
        spent_before, created = block_delta(block, undo)
        with self.batch():
            self.db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (h.height, h.hash, h.prev_hash, h.time, h.tx_root, h.nonce, h.size, h.tx_count,
                 h.fees_sat, h.min_feerate, body, undo_data, _checksum(body, undo_data)))
            self._apply_rows(block, spent_before, created)
            self._set_meta("tip_height", h.height)
            self._set_meta("tip_hash", h.hash)
            if h.height == 0:
                self._set_meta("format", FORMAT_VERSION)
                self._set_meta("genesis_txid", block.txids[0])
                self._set_meta("supply_sat", sum(o.amount_sat for o in block.txs[0].outputs))
        self._remember(block)

    def _apply_rows(self, block: Block, spent_before: list[Coin], created: list[Coin]) -> None:
        db = self.db
        db.executemany("INSERT INTO txs VALUES (?, ?, ?)",
                       [(txid, block.height, i) for i, txid in enumerate(block.txids)])
        db.executemany("DELETE FROM utxos WHERE txid = ? AND vout = ?",
                       [(c.outpoint.txid, c.outpoint.vout) for c in spent_before])
        db.executemany("INSERT INTO utxos VALUES (?, ?, ?, ?, ?)", _coin_rows(created))
        db.executemany("INSERT OR REPLACE INTO spends VALUES (?, ?, ?)",
                       [(txin.txid, txin.vout, txid)
                        for txid, tx in zip(block.txids, block.txs, strict=True)
                        for txin in tx.inputs])

    def pop(self, height: int) -> None:
        """Remove the tip block at ``height`` and undo its effect, in one transaction."""
        block, undo = self.block(height), self.undo(height)
        spent_before, created = block_delta(block, undo)
        prev_hash = block.prev_hash
        with self.batch():
            db = self.db
            db.execute("DELETE FROM blocks WHERE height = ?", (height,))
            db.executemany("DELETE FROM txs WHERE txid = ?", [(t,) for t in block.txids])
            db.executemany("DELETE FROM utxos WHERE txid = ? AND vout = ?",
                           [(c.outpoint.txid, c.outpoint.vout) for c in created])
            db.executemany("INSERT INTO utxos VALUES (?, ?, ?, ?, ?)", _coin_rows(spent_before))
            db.executemany("DELETE FROM spends WHERE txid = ? AND vout = ?",
                           [(txin.txid, txin.vout) for tx in block.txs for txin in tx.inputs])
            self._set_meta("tip_height", height - 1)
            self._set_meta("tip_hash", prev_hash)
        self.cache.pop(height, None)

    def block(self, height: int) -> Block:
        """The block at ``height`` (cached; the most recent ones are the hot ones)."""
        block = self.cache.get(height)
        if block is not None:
            self.cache.move_to_end(height)
            return block
        row = self.db.execute(f"SELECT {_HEADER_COLUMNS}, body FROM blocks WHERE height = ?",
                              (height,)).fetchone()
        if row is None:
            raise StoreCorrupt(f"block {height} is not in {self.path}")
        block = Block.from_stored(Header(*row[:10]), row[10])
        self._remember(block)
        return block

    def undo(self, height: int) -> list[Coin]:
        """The coins the block at ``height`` spent."""
        row = self.db.execute("SELECT undo FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise StoreCorrupt(f"block {height} is not in {self.path}")
        return decode_undo(row[0])

    def _remember(self, block: Block) -> None:
        self.cache[block.height] = block
        self.cache.move_to_end(block.height)
        while len(self.cache) > self.cache_blocks:
            self.cache.popitem(last=False)

    # --- loading ---------------------------------------------------------------------
    def load(self) -> Snapshot:
        """Headers and indexes of the stored chain; drop a torn last record first."""
        headers = [Header(*row) for row in self.db.execute(
            f"SELECT {_HEADER_COLUMNS} FROM blocks ORDER BY height")]
        good = _good_prefix(headers)
        if good and not self._record_intact(good - 1):
            good -= 1
        if good == 0:
            raise StoreCorrupt(f"{self.path} has no intact genesis block")
        tip = headers[good - 1]
        repaired = []
        if good < len(headers) or (self.meta("tip_height"), self.meta("tip_hash")) != (
                tip.height, tip.hash):
            repaired.append(f"dropped {len(headers) - good} torn or unlinked block record(s) "
                            f"above height {tip.height}; indexes rebuilt from the blocks")
            log.warning("store: %s", repaired[-1])
            self._repair(tip.height)
            self.cache.clear()
        snapshot = self._read_indexes(headers[:good])
        snapshot.repaired = repaired
        return snapshot

    def _record_intact(self, height: int) -> bool:
        row = self.db.execute("SELECT body, undo, checksum FROM blocks WHERE height = ?",
                              (height,)).fetchone()
        return row is not None and _checksum(row[0], row[1]) == row[2]

    def _read_indexes(self, headers: list[Header]) -> Snapshot:
        db = self.db
        utxos = {}
        conds: dict[bytes, list] = {}  # most coins share a few policies: decode each once
        for txid, vout, height, amount, packed in db.execute("SELECT * FROM utxos"):
            cond = conds.get(packed)
            if cond is None:
                cond = conds[packed] = msgpack.unpackb(packed, raw=False)
            op = OutPoint(txid, vout)
            utxos[op] = Coin(op, TxOut(amount, cond), height)
        tx_index = {txid: (height, idx) for txid, height, idx in db.execute("SELECT * FROM txs")}
        spent_by = {OutPoint(txid, vout): spender
                    for txid, vout, spender in db.execute("SELECT * FROM spends")}
        supply = self.meta("supply_sat")
        if not isinstance(supply, int):
            raise StoreCorrupt(f"{self.path} has no supply recorded")
        return Snapshot(headers, utxos, tx_index, spent_by, supply)

    def _repair(self, tip_height: int) -> None:
        """Drop block records above ``tip_height``; rebuild the indexes by replaying."""
        rebuilt = Ledger(MemoryArchive(keep_bodies=False))
        for height in range(tip_height + 1):
            rebuilt.connect(self.block(height))
        with self.batch():
            db = self.db
            db.execute("DELETE FROM blocks WHERE height > ?", (tip_height,))
            for table in ("txs", "utxos", "spends"):
                db.execute(f"DELETE FROM {table}")
            db.executemany("INSERT INTO txs VALUES (?, ?, ?)",
                           [(t, h, i) for t, (h, i) in rebuilt.tx_index.items()])
            db.executemany("INSERT INTO utxos VALUES (?, ?, ?, ?, ?)",
                           _coin_rows(rebuilt.utxos.values()))
            db.executemany("INSERT INTO spends VALUES (?, ?, ?)",
                           [(op.txid, op.vout, s) for op, s in rebuilt.spent_by.items()])
            self._set_meta("tip_height", tip_height)
            self._set_meta("tip_hash", rebuilt.tip.hash)

    # --- the mempool journal ---------------------------------------------------------
    def mempool_put(self, entry: Entry) -> None:
        """Remember an accepted mempool entry."""
        self.db.execute("INSERT OR REPLACE INTO mempool VALUES (?, ?, ?)",
                        (entry.txid, entry.arrival, entry.tx.serialize()))

    def mempool_delete(self, txids: Iterable[bytes]) -> None:
        """Forget mempool entries."""
        self.db.executemany("DELETE FROM mempool WHERE txid = ?", [(t,) for t in txids])

    def mempool_clear(self) -> None:
        """Forget every mempool entry."""
        self.db.execute("DELETE FROM mempool")

    def mempool_rows(self) -> list[bytes]:
        """The stored mempool transactions (serialized), in arrival order."""
        return [raw for (raw,) in self.db.execute("SELECT raw FROM mempool ORDER BY arrival")]


def _coin_rows(coins: Iterable[Coin]) -> list[tuple]:
    return [(c.outpoint.txid, c.outpoint.vout, c.height, c.txout.amount_sat, _pack(c.txout.cond))
            for c in coins]


def _good_prefix(headers: list[Header]) -> int:
    """How many headers from genesis on are numbered, linked and hashed right."""
    prev = None
    for i, h in enumerate(headers):
        if h.height != i or h.recomputed_hash() != h.hash or (
                prev is not None and h.prev_hash != prev):
            return i
        prev = h.hash
    return len(headers)
