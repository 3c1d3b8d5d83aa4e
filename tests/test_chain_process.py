"""The chain process over its RPC: a BOLT 3 to_local output and its penalty, reorgs,
censorship, fee spikes, the lookups peers and the runner use, and the events."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import identity
from emulator.network import Network, PeerPlan
from emulator.policy import and_, older, or_, pk, revocation
from emulator.rpc import RpcClient, RpcError
from emulator.tx import OutPoint, Tx, TxOut
from emulator.waiting import wait_for
from l1chain.block import coinbase
from l1chain.testkit import Key, Prevout, pay, spend

pytestmark = pytest.mark.process

REV, DELAYED = Key.named("revocation"), Key.named("delayed")
TO_SELF_DELAY = 5


@pytest.fixture
def chain_net(directory: Path) -> Iterator[Callable[..., Network]]:
    """Start chain processes (no peers) funding ``alice``; stop them all in the end."""
    nets: list[Network] = []

    def make(block_interval: float = 0.0, funds_sat: int = 2_000_000) -> Network:
        net = Network(directory / f"net{len(nets)}", seed=3, block_interval=block_interval)
        nets.append(net)
        net.plans = {"alice": PeerPlan("alice", funds_sat=funds_sat)}
        net.start_chain()
        return net

    try:
        yield make
    finally:
        deaths = [d for net in nets for d in net.sup.unexpected_deaths()]
        for net in nets:
            net.stop()
        assert not deaths, deaths


def alice_key(net: Network) -> Key:
    secret = identity.wallet_secret(net.node_secret("alice"), 0)
    return Key(secret, identity.pubkey(secret))


def alice_coin(net: Network) -> Prevout:
    coin = net.chain.call("listunspent", pubkey=alice_key(net).pub)[0]
    return Prevout(OutPoint(coin["txid"], coin["vout"]), coin["amount_sat"], coin["cond"])


def confirm(chain: RpcClient, tx: Tx) -> dict[str, Any]:
    chain.call("submittx", tx=tx.to_wire())
    chain.call("mine", n=1)
    return chain.call("gettx", txid=tx.txid)


def events(net: Network, kind: str, count: int = 1) -> list[dict[str, Any]]:
    return wait_for(lambda: (evs := net.sup.collector.events(kind=kind)) and
                    len(evs) >= count and evs, 10, what=f"{count} {kind} event(s)")


def fan_out(net: Network, count: int) -> list[Prevout]:
    tx = pay(alice_coin(net), alice_key(net), [100_000] * count)
    confirm(net.chain, tx)
    return [Prevout.of(tx, i) for i in range(count)]


def test_to_local_delayed_branch_waits_and_revocation_branch_is_a_penalty(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    to_local = or_(revocation(pk(REV.pub)), and_(pk(DELAYED.pub), older(TO_SELF_DELAY)))
    commitment = pay(alice_coin(net), alice_key(net), [400_000, 400_000], to=to_local)
    funded_at = confirm(chain, commitment)["height"]
    delayed = spend([Prevout.of(commitment, 0)], [TxOut(390_000, DELAYED.cond)],
                    [[DELAYED]], paths=[(1,)], sequence=TO_SELF_DELAY)
    with pytest.raises(RpcError) as info:
        chain.call("submittx", tx=delayed.to_wire())
    needed = TO_SELF_DELAY - 1  # the next block is 1 deep; the branch opens at 5 deep
    assert info.value.code == "tx_rejected"
    assert f"{needed} more blocks needed" in str(info.value)
    verdict = chain.call("checktx", tx=delayed.to_wire())
    assert (verdict["allowed"], verdict["reason"], verdict["policy_reason"]) == (
        False, "policy", "relative_timelock")
    assert verdict["blocks_needed"] == needed and "older(5)" in verdict["branch"]
    rejected = events(net, "tx_rejected")[-1]["data"]
    assert (rejected["txid"], rejected["blocks_needed"]) == (delayed.txid.hex(), needed)

    justice = spend([Prevout.of(commitment, 1)], [TxOut(390_000, REV.cond)], [[REV]],
                    paths=[(0,)])
    penalty_height = confirm(chain, justice)["height"]  # at once: one block after funding
    assert penalty_height == funded_at + 1
    penalty = events(net, "penalty")[0]["data"]
    assert penalty == {**penalty, "txid": justice.txid.hex(), "inputs": [0],
                       "height": penalty_height}
    assert penalty["outpoints"] == [{"txid": commitment.txid.hex(), "vout": 1}]

    assert chain.call("checktx", tx=delayed.to_wire())["blocks_needed"] == needed - 1
    chain.call("mine", n=needed - 2)
    assert chain.call("checktx", tx=delayed.to_wire())["blocks_needed"] == 1
    chain.call("mine", n=1)
    assert confirm(chain, delayed)["height"] == funded_at + TO_SELF_DELAY
    assert len(net.sup.collector.events(kind="penalty")) == 1  # the delayed spend is none
    assert chain.call("verify")["ok"]


def test_reorg_of_depth_three_returns_txs_but_not_the_dropped_one(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    coins = fan_out(net, 4)
    txs = [pay(coin, alice_key(net), [99_000]) for coin in coins[:3]]
    for tx in txs:
        confirm(chain, tx)
    old_height = chain.call("getheight")
    old_blocks = [chain.call("getblock", height=old_height - i)["hash"] for i in range(3)]
    result = chain.call("reorg", depth=3, drop=[txs[1].txid])
    assert result["fork_height"] == old_height - 3 and result["height"] == old_height + 1
    assert set(result["disconnected"]) == set(old_blocks)
    assert result["returned"] == [txs[0].txid, txs[2].txid]
    assert result["dropped"] == [txs[1].txid] and len(result["mined"]) == 4
    for tx in (txs[0], txs[2]):
        assert chain.call("gettx", txid=tx.txid)["status"] == "confirmed"
    with pytest.raises(RpcError) as info:
        chain.call("gettx", txid=txs[1].txid)
    assert info.value.code == "not_found"
    with pytest.raises(RpcError):
        chain.call("getblock", hash=old_blocks[0])
    reorg = events(net, "reorg")[0]["data"]
    assert (reorg["depth"], reorg["dropped"]) == (3, [txs[1].txid.hex()])
    assert chain.call("verify")["ok"]


def test_censored_tx_waits_in_the_mempool_then_confirms(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    coins = fan_out(net, 2)
    censored = pay(coins[0], alice_key(net), [99_000])
    chain.call("censor", txid=censored.txid, blocks=2)
    chain.call("submittx", tx=censored.to_wire())
    for _ in range(2):
        chain.call("mine", n=1)
        assert chain.call("gettx", txid=censored.txid)["status"] == "mempool"
    assert chain.call("getmempool")[0]["excluded"] is None  # the censorship has run out
    chain.call("mine", n=1)
    assert chain.call("gettx", txid=censored.txid)["status"] == "confirmed"


def test_fee_spike_is_honoured_by_the_miner_and_estimatefee(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    cheap = pay(fan_out(net, 1)[0], alice_key(net), [99_000])  # ~3.4 sat/byte
    assert chain.call("estimatefee")["feerate_sat_per_kb"] == 1_000
    chain.call("feespike", min_feerate_sat_per_kb=20_000, blocks=1)
    assert chain.call("estimatefee") == {**chain.call("estimatefee"), "basis": "feespike",
                                         "feerate_sat_per_kb": 20_000}
    chain.call("submittx", tx=cheap.to_wire())
    chain.call("mine", n=1)
    assert chain.call("gettx", txid=cheap.txid)["status"] == "mempool"
    chain.call("mine", n=1)
    assert chain.call("gettx", txid=cheap.txid)["status"] == "confirmed"
    assert chain.call("estimatefee")["basis"] == "floor"


def test_lookups_by_hash_position_spender_and_key(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    key = alice_key(net)
    genesis = alice_coin(net)
    tx = pay(genesis, key, [1_500_000, 400_000])
    assert chain.call("getspender", txid=genesis.outpoint.txid, vout=0) is None
    chain.call("submittx", tx=tx.to_wire())
    assert chain.call("getspender", txid=genesis.outpoint.txid, vout=0)["status"] == "mempool"
    block = chain.call("mine", n=1)[0]
    info = chain.call("gettx", txid=tx.txid)
    assert (info["height"], info["index"], info["blockhash"]) == (1, 1, block["hash"])
    assert info["confirmations"] == 1
    spender = chain.call("getspender", txid=genesis.outpoint.txid, vout=0)
    assert (spender["txid"], spender["height"], spender["index"]) == (tx.txid, 1, 1)
    by_hash = chain.call("getblock", hash=block["hash"])
    assert by_hash == chain.call("getblock", height=1) and by_hash["txids"][1] == tx.txid
    assert [c["vout"] for c in chain.call("listunspent", pubkey=key.pub)] == [0, 1]
    assert chain.call("getutxo", txid=tx.txid, vout=1)["amount_sat"] == 400_000
    assert chain.call("getutxo", txid=genesis.outpoint.txid, vout=0) is None
    headers = chain.call("getheaders", start=0)
    assert [h["hash"] for h in headers] == [chain.call("getblock", height=0)["hash"],
                                            block["hash"]]
    assert chain.call("getinfo")["height"] == 1


def test_malformed_and_coinbase_shaped_txs_are_rejected_with_reasons(chain_net) -> None:
    net = chain_net()
    chain = net.chain
    with pytest.raises(RpcError) as info:
        chain.call("submittx", tx={"version": 2, "inputs": "nope"})
    assert info.value.code == "tx_rejected" and "malformed" in str(info.value)
    fake_coinbase = coinbase(7, [TxOut(1_000_000, alice_key(net).cond)])
    with pytest.raises(RpcError) as info:
        chain.call("submittx", tx=fake_coinbase.to_wire())
    assert "no_inputs" in str(info.value)
    reasons = [e["data"]["reason"] for e in events(net, "tx_rejected", 2)]
    assert reasons == ["malformed", "no_inputs"]
    assert chain.call("checktx", tx=b"\x00junk")["reason"] == "malformed"


def test_interval_mining_pauses_and_resumes(chain_net) -> None:
    net = chain_net(block_interval=0.05)
    chain = net.chain
    start = chain.call("getheight")
    wait_for(lambda: chain.call("getheight") >= start + 3, 10, what="three interval blocks")
    assert chain.call("pausemining") is True
    assert chain.call("getinfo")["mining_paused"] is True
    paused_at = chain.call("getheight")
    assert chain.call("mine", n=2)[-1]["height"] == paused_at + 2  # on demand still works
    chain.call("resumemining")
    wait_for(lambda: chain.call("getheight") >= paused_at + 4, 10, what="mining resumed")
    assert len(events(net, "block", 4)) >= 4
