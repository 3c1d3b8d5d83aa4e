"""The peer's SQLite store: channels, their HTLCs, invoices, payments, preimages.

One store per peer, in WAL mode with ``synchronous=NORMAL`` (survives a process
kill). Every channel change is written as one transaction holding the channel's
record and the HTLC records that changed since the last write, before any message
that depends on it leaves the process.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (cid BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (payment_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS payments (payment_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS htlcs (cid BLOB NOT NULL, offerer INTEGER NOT NULL,
    htlc_id INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (cid, offerer, htlc_id))
    WITHOUT ROWID;
"""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Store:
    """Durable state of one peer."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside lands together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def put(self, table: str, key: bytes, obj: Any) -> None:
        """Write one record (inside or outside a transaction)."""
        self.db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, _pack(obj)))

    def get(self, table: str, key: bytes) -> Any:
        row = self.db.execute(f"SELECT data FROM {table} WHERE {_key(table)} = ?",
                              (key,)).fetchone()
        return _unpack(row[0]) if row else None

    def all(self, table: str) -> list[Any]:
        return [_unpack(row[0]) for row in self.db.execute(f"SELECT data FROM {table}")]

    def set_value(self, key: str, obj: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, _pack(obj)))

    def value(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return _unpack(row[0]) if row else default

    def write_htlcs(self, cid: bytes, changed: list[dict[str, Any]],
                    dropped: list[tuple[int, int]]) -> None:
        """Write changed HTLC records of channel ``cid`` and delete dropped ones."""
        if changed:
            self.db.executemany(
                "INSERT OR REPLACE INTO htlcs VALUES (?, ?, ?, ?)",
                [(cid, obj["offerer"], obj["htlc"]["htlc_id"], _pack(obj)) for obj in changed])
        if dropped:
            self.db.executemany("DELETE FROM htlcs WHERE cid = ? AND offerer = ? AND htlc_id = ?",
                                [(cid, side, htlc_id) for side, htlc_id in dropped])

    def htlcs(self, cid: bytes) -> list[Any]:
        """Every stored HTLC record of channel ``cid``."""
        return [_unpack(row[0]) for row in
                self.db.execute("SELECT data FROM htlcs WHERE cid = ?", (cid,))]

    def rekey_htlcs(self, old: bytes, new: bytes) -> None:
        self.db.execute("UPDATE htlcs SET cid = ? WHERE cid = ?", (new, old))

    def close(self) -> None:
        self.db.close()


def _key(table: str) -> str:
    return {"channels": "cid", "invoices": "payment_hash", "payments": "payment_hash"}[table]
