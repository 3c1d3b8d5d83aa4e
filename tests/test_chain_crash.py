"""Persistence: the chain reloads from SQLite exactly, drops a torn last record, refuses a
foreign genesis, keeps its mempool, and survives SIGKILL at random moments."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
import zmq

from emulator import envelope, identity, transport
from emulator.network import Network, PeerPlan
from emulator.rpc import RpcClient, RpcError
from emulator.tx import OutPoint
from emulator.waiting import wait_for
from l1chain.chain import Chain, ChainLimits
from l1chain.errors import GenesisMismatch
from l1chain.startup import STORE_FILE, Opened, open_chain
from l1chain.testkit import Key, Prevout, genesis_prevouts, pay

ALICE, BOB, MINER = Key.named("alice"), Key.named("bob"), Key.named("miner")
ALLOCATIONS = [(ALICE.pub, 1_000_000), (BOB.pub, 500_000)]
CRASH_ROUNDS = 20
CRASH_SEED = 20261125


def open_at(data_dir: Path, allocations: list = ALLOCATIONS) -> Opened:
    return open_chain(data_dir, allocations, MINER.pub, ChainLimits(), genesis_time=1.0)


def state(chain: Chain) -> tuple:
    ledger = chain.ledger
    return ([h for h in ledger.headers], dict(ledger.utxos), dict(ledger.tx_index),
            dict(ledger.spent_by), {k: set(v) for k, v in ledger.by_key.items()},
            ledger.supply_sat)


def build_history(chain: Chain) -> list:
    """A few blocks, an in-block chain, a reorg, and one tx left in the mempool."""
    alice, bob = genesis_prevouts(chain)
    parent = pay(alice, ALICE, [600_000, 390_000])
    chain.submit(parent)
    chain.submit(pay(Prevout.of(parent, 0), ALICE, [590_000], to=BOB.cond))
    chain.mine(2.0)
    chain.submit(pay(Prevout.of(parent, 1), ALICE, [380_000]))
    chain.mine(3.0)
    chain.mine(4.0)
    chain.reorg(2, time=5.0)
    pending = pay(bob, BOB, [490_000])
    chain.submit(pending)
    return [pending.txid]


def test_a_reopened_store_gives_the_same_ledger_and_mempool(tmp_path: Path) -> None:
    opened = open_at(tmp_path)
    assert opened.created
    pending = build_history(opened.chain)
    before = state(opened.chain)
    opened.store.close()
    again = open_at(tmp_path)
    assert not again.created and again.repaired == []
    assert state(again.chain) == before
    assert list(again.chain.mempool.entries) == pending
    assert again.chain.ledger.verify()["ok"]
    tip = again.chain.ledger.tip
    mined = again.chain.mine(9.0).block  # mining resumes on the stored tip
    assert (mined.height, mined.prev_hash) == (tip.height + 1, tip.hash)
    again.store.close()


def test_the_stored_mempool_is_revalidated_on_load(tmp_path: Path) -> None:
    opened = open_at(tmp_path)
    alice, _ = genesis_prevouts(opened.chain)
    tx = pay(alice, ALICE, [990_000])
    opened.chain.submit(tx)
    ghost = pay(Prevout(OutPoint(b"\x33" * 32, 0), 5_000, ALICE.cond), ALICE, [4_000])
    opened.store.db.execute("INSERT INTO mempool VALUES (?, ?, ?)",
                            (ghost.txid, 99, ghost.serialize()))
    opened.store.db.execute("INSERT INTO mempool VALUES (?, ?, ?)", (b"\x44" * 32, 100, b"junk"))
    opened.store.close()
    again = open_at(tmp_path)
    assert list(again.chain.mempool.entries) == [tx.txid]
    assert [t for t, _ in again.mempool_refused] == [ghost.txid]
    assert again.store.mempool_rows() == [tx.serialize()]
    again.store.close()


def test_a_torn_last_record_is_dropped_and_the_indexes_rebuilt(tmp_path: Path) -> None:
    opened = open_at(tmp_path)
    chain = opened.chain
    build_history(chain)
    good = state(chain)
    chain.mine(10.0)
    opened.store.close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # half of the last body is gone
        db.execute("UPDATE blocks SET body = substr(body, 1, 20) WHERE height = "
                   "(SELECT max(height) FROM blocks)")
    again = open_at(tmp_path)
    assert again.repaired and state(again.chain) == good
    assert again.chain.ledger.verify()["ok"]
    again.store.close()
    third = open_at(tmp_path)
    assert third.repaired == [] and third.chain.ledger.verify()["ok"]
    third.store.close()


def test_a_record_that_does_not_link_is_dropped(tmp_path: Path) -> None:
    opened = open_at(tmp_path)
    opened.chain.mine(2.0)
    height = opened.chain.height
    row = opened.store.db.execute("SELECT * FROM blocks WHERE height = ?", (height,)).fetchone()
    opened.store.db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (height + 1, b"\x55" * 32, b"\x66" * 32, *row[3:]))
    opened.store.close()
    again = open_at(tmp_path)
    assert again.repaired and again.chain.height == height
    again.store.close()


def test_a_foreign_genesis_is_a_typed_error(tmp_path: Path) -> None:
    open_at(tmp_path).store.close()
    with pytest.raises(GenesisMismatch, match="genesis"):
        open_at(tmp_path, [(ALICE.pub, 1_000_001)])


# --- the chain process, killed at random moments ---------------------------------------------

def submit_some(chain: RpcClient, key: Key, rng: random.Random, count: int) -> list[bytes]:
    """Spend up to ``count`` random coins of ``key`` back to it; the txids accepted."""
    accepted = []
    for tx in random_spends(chain, key, rng, count):
        try:
            accepted.append(chain.call("submittx", tx=tx.to_wire())["txid"])
        except RpcError as exc:  # the coin may be spent in the mempool already
            assert exc.code == "tx_rejected", exc
    return accepted


def fire_burst(endpoint: str, txs: list) -> zmq.Socket:
    """Send submittx requests without waiting; the socket the replies will come to."""
    sock = transport.dealer(zmq.Context.instance(), endpoint, immediate=False)
    for rid, tx in enumerate(txs, 1):
        sock.send(envelope.pack_request("submittx", {"tx": tx.to_wire()}, rid))
    return sock


def random_spends(chain: RpcClient, key: Key, rng: random.Random, count: int) -> list:
    """Spends of random coins of ``key`` that nothing in the mempool spends yet."""
    coins = [c for c in chain.call("listunspent", pubkey=key.pub)
             if chain.call("getspender", txid=c["txid"], vout=c["vout"]) is None]
    txs = []
    for coin in rng.sample(coins, min(count, len(coins))):
        prev = Prevout(OutPoint(coin["txid"], coin["vout"]), coin["amount_sat"], coin["cond"])
        txs.append(pay(prev, key, [coin["amount_sat"] - rng.choice((400, 800, 1_600))]))
    return txs


def wait_height(chain: RpcClient, height: int) -> int:
    return wait_for(lambda: (h := chain.call("getheight")) >= height and h, 10,
                    what=f"chain height {height}")


def all_hashes(chain: RpcClient) -> list[bytes]:
    hashes: list[bytes] = []
    while batch := chain.call("getheaders", start=len(hashes)):
        hashes.extend(h["hash"] for h in batch)
    return hashes


def fan_out(chain: RpcClient, key: Key, coins: int) -> None:
    genesis = chain.call("listunspent", pubkey=key.pub)[0]
    prev = Prevout(OutPoint(genesis["txid"], genesis["vout"]), genesis["amount_sat"],
                   genesis["cond"])
    tx = pay(prev, key, [genesis["amount_sat"] // coins - 1_000] * coins)
    chain.call("submittx", tx=tx.to_wire())
    wait_for(lambda: chain.call("gettx", txid=tx.txid)["status"] == "confirmed", 10,
             what="the fan-out transaction confirmed")


def check_after_restart(chain: RpcClient, seen: list[bytes], pending: set[bytes]) -> int:
    report = chain.call("verify")
    assert report["ok"], report
    hashes = all_hashes(chain)
    assert hashes[:len(seen)] == seen, "a block seen before the kill changed or vanished"
    for txid in pending:  # accepted before the kill: confirmed, or kept in the mempool
        assert chain.call("gettx", txid=txid)["status"] in ("confirmed", "mempool")
    return len(hashes) - 1


@pytest.mark.process
def test_chain_survives_sigkill_at_random_moments(directory: Path) -> None:
    rng = random.Random(CRASH_SEED)
    net = Network(directory / "crash", seed=CRASH_SEED, block_interval=0.05)
    net.plans = {"alice": PeerPlan("alice", funds_sat=10_000_000)}
    try:
        proc = net.start_chain()
        secret = identity.wallet_secret(net.node_secret("alice"), 0)
        key = Key(secret, identity.pubkey(secret))
        chain = net.chain
        fan_out(chain, key, 30)
        pending: set[bytes] = set()
        for _ in range(CRASH_ROUNDS):
            pending |= set(submit_some(chain, key, rng, rng.randint(0, 3)))
            height = chain.call("getheight")
            wait_height(chain, height + rng.randint(0, 3))  # 0: kill right after submitting
            seen = all_hashes(chain)
            if rng.random() < 0.5:  # kill while a burst of submissions is being written
                burst = fire_burst(chain.endpoint, random_spends(chain, key, rng, 10))
                wait_for(burst.poll, 10, what="the first reply to the burst")
                proc.kill()
                burst.close(linger=0)
            else:
                proc.kill()
            proc.start()
            proc.wait_ready(15)
            restarted = check_after_restart(chain, seen, pending)
            assert restarted >= len(seen) - 1
            wait_height(chain, restarted + 1)  # mining resumes
            pending = {t for t in pending
                       if chain.call("gettx", txid=t)["status"] == "mempool"}
        assert not net.sup.unexpected_deaths()
    finally:
        net.stop()
