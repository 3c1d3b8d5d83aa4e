"""The peer's SQLite store: channels, their HTLCs, invoices, payments, preimages.

One store per peer, in WAL mode with ``synchronous=NORMAL`` (survives a process
kill). Inside an event loop, the writes of one loop turn form one transaction (group
commit): it commits at the end of the turn, or earlier, at the write-ahead barrier
(``emulator.barrier``) that every socket send passes first — so no message, reply or
event leaves the process before the state it depends on is on disk. Outside a loop
every write commits at once. A channel change (its record and the HTLC records that
changed since its last write) lands atomically within that transaction (a savepoint).

Commits only append to the write-ahead log; copying the log into the database file
(a checkpoint, with its fsyncs) runs in a thread of its own with its own connection,
every ``CHECKPOINT_EVERY`` commits. SQLite's automatic checkpoint would run it inside
a commit, on the event loop: a stall of several milliseconds every few hundred turns.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

from emulator import barrier

SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (cid BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (payment_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS payments (payment_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS forwards (out_key TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS settling (payment_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS htlcs (cid BLOB NOT NULL, offerer INTEGER NOT NULL,
    htlc_id INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (cid, offerer, htlc_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS onions (cid BLOB NOT NULL, offerer INTEGER NOT NULL,
    htlc_id INTEGER NOT NULL, onion BLOB NOT NULL, PRIMARY KEY (cid, offerer, htlc_id));
CREATE TABLE IF NOT EXISTS old_sigs (cid BLOB NOT NULL, ctn INTEGER NOT NULL,
    sig BLOB NOT NULL, PRIMARY KEY (cid, ctn)) WITHOUT ROWID;
"""
_HTLC_KEY = "WHERE cid = ? AND offerer = ? AND htlc_id = ?"
CHECKPOINT_EVERY = 200  # commits between two checkpoints of the write-ahead log
log = logging.getLogger("store")


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
        self.db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
        self.db.executescript(SCHEMA)
        self._deferred = False  # the open transaction commits at the end of the loop turn
        self._depth = 0  # transaction() blocks open: never commit half of one
        self._closed = False
        self._commits = 0  # since the last checkpoint was asked for
        self._checkpointer = _Checkpointer(str(path))
        barrier.register(self.commit)

    def _begin(self) -> None:
        if self.db.in_transaction:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            asyncio.get_running_loop().call_soon(self.commit)
            self._deferred = True
        except RuntimeError:  # no event loop: each write commits by itself
            self._deferred = False

    def _wrote(self) -> None:
        if not self._deferred:
            self.commit()

    def commit(self) -> None:
        """Make every write so far durable (the barrier calls this before each send);
        inside a transaction() block, at its end instead (it lands whole)."""
        if not self._closed and self._depth == 0 and self.db.in_transaction:
            self.db.execute("COMMIT")
            self._commits += 1
            if self._commits >= CHECKPOINT_EVERY:
                self._commits = 0
                self._checkpointer.request()

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """One statement of another module's table (watchtower), in the current batch."""
        self._begin()
        cursor = self.db.execute(sql, params)
        self._wrote()
        return cursor

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside lands together or not at all."""
        self._begin()
        self.db.execute("SAVEPOINT change")
        self._depth += 1
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO change")
            self.db.execute("RELEASE change")
            raise
        else:
            self.db.execute("RELEASE change")
        finally:
            self._depth -= 1
            self._wrote()

    def put(self, table: str, key: bytes | str, obj: Any) -> None:
        """Write one record (inside or outside a transaction)."""
        self._begin()
        self.db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, _pack(obj)))
        self._wrote()

    def delete(self, table: str, key: bytes | str) -> None:
        self._begin()
        self.db.execute(f"DELETE FROM {table} WHERE {_key(table)} = ?", (key,))
        self._wrote()

    def get(self, table: str, key: bytes) -> Any:
        row = self.db.execute(f"SELECT data FROM {table} WHERE {_key(table)} = ?",
                              (key,)).fetchone()
        return _unpack(row[0]) if row else None

    def all(self, table: str) -> list[Any]:
        return [_unpack(row[0]) for row in self.db.execute(f"SELECT data FROM {table}")]

    def items(self, table: str) -> list[tuple[Any, Any]]:
        """Every (key, record) of ``table``."""
        return [(key, _unpack(data)) for key, data in self.db.execute(
            f"SELECT {_key(table)}, data FROM {table}")]

    def set_value(self, key: str, obj: Any) -> None:
        self.put("kv", key, obj)

    def value(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return _unpack(row[0]) if row else default

    def write_htlcs(self, cid: bytes, changed: list[dict[str, Any]],
                    dropped: list[tuple[int, int]]) -> None:
        """Write changed HTLC records of channel ``cid`` and delete dropped ones.

        An HTLC's onion (1366 bytes, ten times the rest) is written once, apart: the
        record itself changes at every step of the dance. It goes when the record no
        longer holds it (the HTLC is resolved for good) or is dropped."""
        self._begin()
        rows, onions, spent = [], [], []
        for obj in changed:
            htlc = obj["htlc"]
            key = (cid, obj["offerer"], htlc["htlc_id"])
            if htlc["onion"]:
                onions.append((*key, htlc["onion"]))
                obj = {**obj, "htlc": {**htlc, "onion": b""}}
            elif obj["removal"] is not None:
                spent.append(key)
            rows.append((*key, _pack(obj)))
        gone = [(cid, side, htlc_id) for side, htlc_id in dropped]
        # deletes first: an id dropped and offered again (after a reconnection) is live
        self.db.executemany(f"DELETE FROM htlcs {_HTLC_KEY}", gone)
        self.db.executemany(f"DELETE FROM onions {_HTLC_KEY}", spent + gone)
        self.db.executemany("INSERT OR REPLACE INTO htlcs VALUES (?, ?, ?, ?)", rows)
        self.db.executemany("INSERT OR IGNORE INTO onions VALUES (?, ?, ?, ?)", onions)
        self._wrote()

    def htlcs(self, cid: bytes) -> list[Any]:
        """Every stored HTLC record of channel ``cid``, with its onion."""
        records = []
        for data, onion in self.db.execute(
                "SELECT h.data, o.onion FROM htlcs h LEFT JOIN onions o "
                "USING (cid, offerer, htlc_id) WHERE h.cid = ?", (cid,)):
            record = _unpack(data)
            if onion is not None:
                record["htlc"]["onion"] = onion
            records.append(record)
        return records

    def write_old_sigs(self, cid: bytes, added: list[tuple[int, bytes]],
                       dropped: list[int]) -> None:
        """The peer's signatures of our revoked commitments (``cheat`` broadcasts one):
        each written once, when its commitment is revoked, not with every channel write."""
        if not (added or dropped):
            return
        self._begin()
        self.db.executemany("INSERT OR REPLACE INTO old_sigs VALUES (?, ?, ?)",
                            [(cid, ctn, sig) for ctn, sig in added])
        self.db.executemany("DELETE FROM old_sigs WHERE cid = ? AND ctn = ?",
                            [(cid, ctn) for ctn in dropped])
        self._wrote()

    def old_sigs(self, cid: bytes) -> dict[int, bytes]:
        return dict(self.db.execute("SELECT ctn, sig FROM old_sigs WHERE cid = ?", (cid,)))

    def rekey_htlcs(self, old: bytes, new: bytes) -> None:
        self.execute("UPDATE htlcs SET cid = ? WHERE cid = ?", (new, old))
        self.execute("UPDATE onions SET cid = ? WHERE cid = ?", (new, old))
        self.execute("UPDATE old_sigs SET cid = ? WHERE cid = ?", (new, old))

    def close(self) -> None:
        barrier.unregister(self.commit)
        self.commit()
        self._closed = True
        self._checkpointer.stop()
        self.db.close()  # the last connection: SQLite checkpoints the rest here


class _Checkpointer:
    """Checkpoints a database's write-ahead log in a thread, when asked (no timer: idle,
    it sleeps). PASSIVE: it never waits for, nor blocks, the writer; what it cannot copy
    now is copied next time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.done = 0  # checkpoints run

    def request(self) -> None:
        if self._thread is None:  # started on first use: most stores never need it
            self._thread = threading.Thread(target=self._run, name="checkpointer",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self.done += 1
                except sqlite3.Error as exc:  # busy or the like: the next request retries
                    log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            db.close()


def _key(table: str) -> str:
    return {"channels": "cid", "invoices": "payment_hash", "payments": "payment_hash",
            "kv": "key", "forwards": "out_key", "settling": "payment_hash"}[table]
