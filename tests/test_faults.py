"""Every fault in the catalogue happens (visible in the events) and heals: afterwards
the network pays again and money is conserved."""
from __future__ import annotations

import pytest

from emulator import faults
from emulator.actions import open_channels
from emulator.network import PeerPlan
from emulator.waiting import wait_for
from tests.lnhelpers import worth_conserved

pytestmark = pytest.mark.process
NAMES = ["a", "b", "c"]


@pytest.fixture
def net(network_factory):
    net = network_factory([PeerPlan("a", 3_000_000, ("b",)), PeerPlan("b", 3_000_000, ("c",)),
                           PeerPlan("c", 3_000_000)], block_interval=0.5)
    net.wait_connected()
    open_channels(net, [("a", "b", 1_000_000, 0), ("b", "c", 1_000_000, 0)])
    wait_for(lambda: all(len([c for c in net.rpc(n).call("listgraph")["channels"]
                              if c["policy_1"] and c["policy_2"]]) == 2 for n in NAMES),
             30, what="gossip")
    return net


def _pays(net, amount=1_000_000) -> None:
    def attempt():
        inv = net.rpc("c").call("invoice", amount_msat=amount, description="after")
        try:
            return net.rpc("a").call("pay", bolt11=inv["bolt11"], timeout=15)["status"] == \
                "succeeded"
        except Exception:
            return False
    wait_for(attempt, 60, what="a payment a->c after healing")


def _saw(net, kind, **match):
    return wait_for(lambda: [e for e in net.sup.collector.events(kind=kind)
                             if all(e["data"].get(k) == v for k, v in match.items())],
                    15, what=f"event {kind} {match}")


@pytest.mark.parametrize("kind,params,evidence", [
    ("kill", {"peer": "b"}, ("disconnected", {})),
    ("stop", {"peer": "b"}, ("disconnected", {})),
    ("pause", {"peer": "b"}, ("disconnected", {"reason": "ping timeout"})),
    ("link", {"peer": "a", "to": "b", "delay_ms": 50, "jitter_ms": 20}, ("fault_link", {})),
    ("link", {"peer": "a", "to": "b", "loss": 1.0}, ("disconnected", {})),
    ("link", {"peer": "a", "to": "b", "duplicate": 1.0}, ("disconnected", {"code": "duplicate"})),
    ("link", {"peer": "a", "to": "b", "reorder": 1.0}, ("disconnected", {"code": "gap"})),
    ("partition", {"peers": ["c"]}, ("disconnected", {})),
    ("pause_mining", {}, ("mining_paused", {})),
    ("hold", {"peer": "c"}, ("fault", {"fault": "hold"})),
    ("withhold_revoke", {"peer": "c"}, ("fault", {"fault": "withhold_revoke"})),
    ("gossip_flood", {"peer": "a", "count": 50}, ("fault_gossip_flood", {"sent": 50})),
], ids=["kill", "stop", "pause", "delay", "loss", "duplicate", "reorder", "partition",
        "pause_mining", "hold", "withhold_revoke", "gossip_flood"])
def test_fault_happens_and_heals(net, kind, params, evidence):
    faults.inject(net, kind, **params)
    _saw(net, "fault", fault=kind)
    # traffic makes the fault bite: a payment attempt exercises the links
    inv = net.rpc("c").call("invoice", amount_msat=1_000_000, description="during")
    try:
        net.rpc("a").call("pay", bolt11=inv["bolt11"], wait=False, reply_timeout=5)
    except Exception:
        pass  # the payer itself may be the one that is down
    _saw(net, evidence[0], **evidence[1])
    faults.heal(net, kind, **params)
    faults.heal_everything(net)
    net.wait_connected(30)
    _pays(net)
    net.chain.call("mine", n=30 if kind in ("hold", "withhold_revoke") else 1)
    wait_for(lambda: all(ch["quiescent"] for n in NAMES for ch in net.rpc(n).call(
        "listchannels") if ch["state"] == "OPEN"), 60, what="channels quiet")
    assert worth_conserved(net)


def test_chain_faults_reorg_censor_feespike(net):
    net.chain.call("mine", n=5)
    height = net.chain.call("getheight")
    faults.inject(net, "reorg", depth=2)
    _saw(net, "reorg")
    assert net.chain.call("getheight") > height
    faults.inject(net, "feespike", min_feerate_sat_per_kb=50_000, blocks=2)
    _saw(net, "feespike")
    fee = _saw(net, "update_fee")  # openers follow the chain's estimate (BOLT 2 update_fee)
    assert fee[0]["data"]["feerate_per_kw"] >= 10_000
    wait_for(lambda: any(ch["feerate_per_kw"] >= 10_000 for ch in net.rpc("b").call(
        "listchannels")), 15, what="the new feerate locked in on both sides")
    faults.inject(net, "censor", txid="00" * 32, blocks=2)
    _saw(net, "censor")
    _pays(net)
    assert net.chain.call("verify")["ok"]


def test_byzantine_cheat_and_malformed(net):
    inv = net.rpc("b").call("invoice", amount_msat=50_000_000, description="state")
    net.rpc("a").call("pay", bolt11=inv["bolt11"])
    faults.inject(net, "malformed", peer="c", to="b")
    _saw(net, "channel_failed")
    faults.inject(net, "cheat", peer="a", to="b")
    _saw(net, "breach_detected")
    wait_for(lambda: net.sup.collector.events(kind="penalty"), 30, what="the penalty")


def test_heal_links_heals_every_peer_it_can_reach(net):
    """A paused peer never answers: healing the links still heals everyone else and
    names the peer it could not reach (chaos seed 4 left link faults in place)."""
    from emulator.errors import LnemuError
    faults.inject(net, "link", peer="a", to="b", delay_ms=30)
    faults.inject(net, "pause", peer="b")
    try:
        with pytest.raises(LnemuError, match="link faults left on b"):
            faults.heal_links(net)
        for name in ("a", "c"):  # healed although b, between them, did not answer
            wait_for(lambda n=name: net.sup.collector.events(kind="fault_healed",
                                                             proc=f"peer {n}"),
                     10, what=f"{name} healed its links")
    finally:
        faults.heal(net, "pause", peer="b")
    faults.heal_links(net)  # everyone answers now
    _pays(net)
    worth_conserved(net)


def test_faults_on_a_paused_peer_do_not_stall_the_schedule(net, monkeypatch):
    """A partition around a paused peer is set on the other side only; a link fault
    asked of a paused peer fails at once, naming it. The frozen peer is never called
    (chaos seed 13: each call waited 10 s for it, so its 2.6 s pause lasted 30 s)."""
    from emulator.errors import LnemuError
    faults.inject(net, "pause", peer="b")
    called: list[str] = []
    rpc = net.rpc
    monkeypatch.setattr(net, "rpc", lambda name: called.append(name) or rpc(name))
    try:
        faults.inject(net, "partition", peers=["b"])
        with pytest.raises(LnemuError, match="b is paused"):
            faults.inject(net, "link", peer="b", to="a", delay_ms=30)
        assert "b" not in called and {"a", "c"} <= set(called)
        for name in ("a", "c"):  # they cut b off themselves
            wait_for(lambda n=name: net.sup.collector.events(kind="fault_link",
                                                             proc=f"peer {n}"),
                     10, what=f"{name} partitioned from b")
    finally:
        faults.heal(net, "pause", peer="b")
    faults.heal_links(net)
    _pays(net)
    worth_conserved(net)


def test_a_resumed_peer_says_so_and_catches_up(net):
    """After SIGCONT a peer reports ``resumed``, catches up with the blocks mined while it
    was frozen, and its forwarder asks the chain's height before it trusts its own."""
    faults.inject(net, "pause", peer="b")
    try:
        paused_at = net.chain.call("getheight")
        net.chain.call("mine", n=3)
    finally:
        faults.heal(net, "pause", peer="b")
    _saw(net, "resumed")
    wait_for(lambda: net.rpc("b").call("getinfo")["blockheight"] >= paused_at + 3, 10,
             what="b caught up with the blocks mined while it was paused")
