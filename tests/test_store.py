"""The peer store's group commit: when writes become visible to another connection.

Outside an event loop every write commits at once; inside one, the writes of a loop
turn form one transaction that commits at the end of the turn or at the write-ahead
barrier (``emulator.barrier.before_send``). "Visible" is what a second sqlite3
connection to the same file reads, i.e. what a crash could no longer take back.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import barrier
from peers.store import Store


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "peer.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    """A store that is closed (and leaves the barrier) even if the test fails."""
    store = Store(path)
    try:
        yield store
    finally:
        store.close()


def committed(path: Path) -> dict[str, Any]:
    """The ``kv`` rows another connection sees (key -> raw value)."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return dict(other.execute("SELECT key, value FROM kv"))


def test_outside_a_loop_each_put_commits_at_once(store, path):
    """Without an event loop a put is visible to another connection as soon as it returns."""
    store.set_value("height", 101)
    assert set(committed(path)) == {"height"}
    assert store.value("height") == 101


def test_in_a_loop_the_writes_of_one_turn_commit_at_its_end(store, path):
    """Two puts in one loop turn stay invisible until the turn ends, then appear together."""
    async def scenario() -> tuple[set[str], set[str]]:
        store.set_value("a", 1)
        store.set_value("b", 2)
        during = set(committed(path))
        await asyncio.sleep(0)  # the turn ends: the commit scheduled with call_soon runs
        return during, set(committed(path))

    during, after = asyncio.run(scenario())
    assert during == set()
    assert after == {"a", "b"}


def test_the_barrier_commits_pending_writes_at_once(store, path):
    """before_send() makes the turn's writes visible without waiting for the turn to end."""
    async def scenario() -> set[str]:
        store.set_value("a", 1)
        store.set_value("b", 2)
        barrier.before_send()
        return set(committed(path))

    assert asyncio.run(scenario()) == {"a", "b"}


def test_a_failed_transaction_undoes_only_its_own_writes(store, path):
    """An exception inside transaction() rolls back its writes; an earlier put of the same
    turn still commits, and so does a later one."""
    async def scenario() -> set[str]:
        store.set_value("before", 1)
        with pytest.raises(ValueError), store.transaction():
            store.set_value("inside", 2)
            store.put("forwards", "out 1", {"amount_msat": 5})
            raise ValueError("the change failed half-way")
        store.set_value("after", 3)
        await asyncio.sleep(0)
        return set(committed(path))

    assert asyncio.run(scenario()) == {"before", "after"}
    assert store.items("forwards") == []


def test_a_transaction_in_a_loop_lands_whole(store, path):
    """The writes of a transaction() that completes commit with the rest of the turn."""
    async def scenario() -> set[str]:
        with store.transaction():
            store.set_value("a", 1)
            store.execute("INSERT INTO kv VALUES (?, ?)", ("b", b"raw"))
        await asyncio.sleep(0)
        return set(committed(path))

    assert asyncio.run(scenario()) == {"a", "b"}


def test_a_transaction_outside_a_loop_lands_whole(store, path):
    """Without an event loop a completed transaction() commits its writes together."""
    with store.transaction():
        store.set_value("a", 1)
        store.set_value("b", 2)
    assert set(committed(path)) == {"a", "b"}


def test_a_failed_transaction_outside_a_loop_undoes_its_writes(store, path):
    """Without an event loop an exception inside transaction() leaves nothing written."""
    with pytest.raises(ValueError), store.transaction():
        store.set_value("inside", 1)
        raise ValueError("the change failed half-way")
    assert committed(path) == {}


def test_close_commits_pending_writes(path):
    """close() inside a loop turn commits what the turn wrote (and the commit that the
    turn had scheduled does not fail on the closed store)."""
    async def scenario() -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        store = Store(path)
        try:
            store.set_value("a", 1)
        finally:
            store.close()
        await asyncio.sleep(0)  # the scheduled end-of-turn commit runs
        return errors

    assert asyncio.run(scenario()) == []
    assert set(committed(path)) == {"a"}


@pytest.mark.parametrize("table,keys", [
    ("forwards", ["00aa:1", "00bb:7"]),
    ("settling", [b"\x01" * 32, b"\x02" * 32]),
])
def test_items_round_trips_keys_and_records_and_delete_removes_one(store, table, keys):
    """items() returns every (key, record) as written; delete() removes just the one."""
    records = [{"amount_msat": 1000 * (i + 1), "hops": [b"\x03" * 33], "note": "x"}
               for i in range(len(keys))]
    for key, record in zip(keys, records, strict=True):
        store.put(table, key, record)
    assert sorted(store.items(table)) == sorted(zip(keys, records, strict=True))
    store.delete(table, keys[0])
    assert store.items(table) == [(keys[1], records[1])]
    assert store.get(table, keys[0]) is None


def _record(htlc_id: int, onion: bytes, removal: str | None = None) -> dict[str, Any]:
    return {"offerer": 1, "htlc": {"htlc_id": htlc_id, "amount_msat": 1000,
                                   "payment_hash": bytes(32), "cltv_expiry": 500,
                                   "onion": onion},
            "added": [1, 1], "add_seq": htlc_id, "removal": removal,
            "removed": [None, None], "remove_seq": -1}


def test_an_htlc_onion_is_stored_once_apart_and_joined_back(store, path):
    """The onion is not rewritten with every change of its record, and loads with it;
    once the record no longer holds it (resolved for good), the onion row goes."""
    cid, onion = b"c" * 32, bytes(range(256)) * 5
    store.write_htlcs(cid, [_record(0, onion)], [])
    with contextlib.closing(sqlite3.connect(path)) as other:
        (data,), = other.execute("SELECT data FROM htlcs")
        assert onion not in data
    assert store.htlcs(cid)[0]["htlc"]["onion"] == onion
    store.write_htlcs(cid, [_record(0, b"", removal="settle")], [])
    assert store.htlcs(cid)[0]["htlc"]["onion"] == b""
    assert store.db.execute("SELECT COUNT(*) FROM onions").fetchone() == (0,)


def test_an_htlc_id_dropped_and_offered_again_in_one_write_is_kept(store):
    """Deletes go first: the HTLC that took the id again survives the write."""
    cid = b"c" * 32
    store.write_htlcs(cid, [_record(7, b"old")], [])
    store.write_htlcs(cid, [_record(7, b"new")], [(1, 7)])
    assert [r["htlc"]["onion"] for r in store.htlcs(cid)] == [b"new"]


def test_the_log_is_checkpointed_in_a_thread_every_so_many_commits(path, monkeypatch):
    """Commits only append to the write-ahead log; every CHECKPOINT_EVERY commits a
    thread of the store copies it into the database file (never the event loop)."""
    from emulator.waiting import wait_for
    from peers import store as store_module
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    store = Store(path)
    checkpointer = store._checkpointer
    try:
        before = path.stat().st_size
        for i in range(9):  # outside a loop each put commits by itself
            store.put("kv", f"k{i}", b"x" * 4000)
        assert checkpointer.done == 0 and checkpointer._thread is None  # idle: no thread
        assert path.stat().st_size == before  # all of it is still in the log
        store.put("kv", "k9", b"x" * 4000)
        wait_for(lambda: checkpointer.done >= 1, 10, what="a checkpoint by the thread")
        assert path.stat().st_size >= before + 10 * 4000  # the rows reached the file
        assert committed(path)["k9"]
    finally:
        store.close()
    assert not checkpointer._thread.is_alive()  # close() ends it
