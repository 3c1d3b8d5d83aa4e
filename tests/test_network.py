"""A network, not just channels: routing with fees, retries, MPP, messages, gossip."""
from __future__ import annotations

import pytest

from emulator.actions import open_channels
from emulator.network import PeerPlan
from emulator.rpc import RpcError
from emulator.waiting import wait_for
from tests.lnhelpers import worth_conserved

pytestmark = pytest.mark.process
FEES = {"b": (1000, 100), "c": (2000, 10), "d": (500, 1000)}  # base msat, ppm
LINE = ["a", "b", "c", "d", "e"]


def _plans(names, links, fees=FEES):
    return [PeerPlan(n, 3_000_000, tuple(links.get(n, ())), n, *fees.get(n, (1000, 1)))
            for n in names]


def _gossip_done(net, names, channels):
    """Every peer knows every channel and both directions' policies."""
    def complete(name):
        known = net.rpc(name).call("listgraph")["channels"]
        return len([c for c in known if c["policy_1"] and c["policy_2"]]) >= channels
    wait_for(lambda: all(complete(n) for n in names), 30, what="gossip converged")


def _local(net, name, peer):
    for ch in net.rpc(name).call("listchannels"):
        if ch["peer_id"] == net.node_id(peer) and ch["state"] == "OPEN":
            return ch["local_msat"]
    raise AssertionError(f"no open channel {name}-{peer}")


@pytest.fixture
def line(network_factory):
    net = network_factory(_plans(LINE, {n: [m] for n, m in zip(LINE, LINE[1:], strict=False)}))
    net.wait_connected()
    open_channels(net, [(x, y, 1_000_000, 0) for x, y in zip(LINE, LINE[1:], strict=False)])
    _gossip_done(net, LINE, 4)
    return net


def test_line_payment_pays_every_hop_its_exact_fee(line):
    net = line
    before = {n: net.rpc(n).call("getinfo")["fees_earned_msat"] for n in "bcd"}
    amount = 50_000_000
    inv = net.rpc("e").call("invoice", amount_msat=amount, description="5 hops")
    res = net.rpc("a").call("pay", bolt11=inv["bolt11"])
    assert res["status"] == "succeeded" and res["preimage"]
    # fees, from the payee back: d forwards `amount`, c forwards amount + fee_d, ...
    expect, forwarded = {}, amount
    for hop in ("d", "c", "b"):
        base, ppm = FEES[hop]
        expect[hop] = base + forwarded * ppm // 1_000_000
        forwarded += expect[hop]
    assert res["fee_msat"] == sum(expect.values())
    for hop in "bcd":
        earned = net.rpc(hop).call("getinfo")["fees_earned_msat"] - before[hop]
        assert earned == expect[hop], hop
    # every channel moved by what crossed it
    assert 1_000_000_000 - _local(net, "a", "b") == forwarded
    assert _local(net, "e", "d") == amount
    assert worth_conserved(net)


def test_cltv_deltas_add_up_along_the_route(line):
    net = line
    net.rpc("e").call("dev_hold", hold=True)
    inv = net.rpc("e").call("invoice", amount_msat=10_000_000, description="held")
    net.rpc("a").call("pay", bolt11=inv["bolt11"], wait=False)
    wait_for(lambda: net.sup.collector.events(kind="htlc_held", proc="peer e"), 10,
             what="the HTLC reaches e")
    expiries = []
    for x, y in zip(LINE, LINE[1:], strict=False):
        ch = [c for c in net.rpc(x).call("listchannels") if c["peer_id"] == net.node_id(y)][0]
        expiries.append(ch["htlcs"][0]["cltv_expiry"])
    delta = net.rpc("b").call("listgraph")["channels"][0]["policy_1"]["cltv_expiry_delta"]
    assert [a - b for a, b in zip(expiries, expiries[1:], strict=False)] == [delta] * 3


def test_message_pays_every_hop_and_lands_verified(line):
    net = line
    earned = {n: net.rpc(n).call("getinfo")["fees_earned_msat"] for n in "bcd"}
    net.rpc("a").call("sendmessage", node_id=net.node_id("e"), text="hello from a")
    inbox = net.rpc("e").call("inbox")
    assert inbox[-1]["text"] == "hello from a" and inbox[-1]["verified"]
    assert inbox[-1]["sender"] == net.node_id("a")
    for hop in "bcd":
        assert net.rpc(hop).call("getinfo")["fees_earned_msat"] > earned[hop]
    with pytest.raises(RpcError) as info:
        net.rpc("a").call("sendmessage", node_id=net.node_id("e"), text="x" * 2000)
    assert "too long" in str(info.value) and "room for" in str(info.value)


def _all_quiet(net, names):
    wait_for(lambda: all(ch["quiescent"] for n in names
                         for ch in net.rpc(n).call("listchannels") if ch["state"] == "OPEN"),
             10, what="every channel quiet")


def _outbound(net, name, peer):
    rows = net.rpc(name).call("liquidity")["channels"]
    return [r for r in rows if r["peer_id"] == net.node_id(peer)][0]["outbound_msat"]


def test_liquidity_moves_by_amount_plus_fees_channel_by_channel(line):
    net = line
    inv = net.rpc("e").call("invoice", amount_msat=50_000_000, description="above reserves")
    net.rpc("a").call("pay", bolt11=inv["bolt11"])
    _all_quiet(net, LINE)
    hops = list(zip(LINE, LINE[1:], strict=False))
    before = {(x, y): (_outbound(net, x, y), _outbound(net, y, x)) for x, y in hops}
    amount = 20_000_000
    inv = net.rpc("e").call("invoice", amount_msat=amount, description="liquidity")
    res = net.rpc("a").call("pay", bolt11=inv["bolt11"])
    _all_quiet(net, LINE)
    carried, forwarded = {}, amount  # what each channel carried, from the payee back
    for x, y in reversed(hops):
        carried[(x, y)] = forwarded
        if x in FEES:
            base, ppm = FEES[x]
            forwarded += base + forwarded * ppm // 1_000_000
    assert carried[("a", "b")] == amount + res["fee_msat"]
    for x, y in hops:
        out_x, out_y = _outbound(net, x, y), _outbound(net, y, x)
        assert before[(x, y)][0] - out_x == carried[(x, y)], (x, y)
        assert out_y - before[(x, y)][1] == carried[(x, y)], (y, x)
    total = net.rpc("a").call("liquidity")
    assert total["outbound_msat"] == sum(r["outbound_msat"] for r in total["channels"])


DIAMOND = ["s", "x", "y", "t"]


def test_diamond_routes_around_missing_liquidity_and_a_dead_peer(network_factory):
    links = {"s": ["x", "y"], "x": ["t"], "y": ["t"]}
    net = network_factory(_plans(DIAMOND, links, {}))
    net.wait_connected()
    open_channels(net, [("s", "x", 1_000_000, 0), ("s", "y", 1_000_000, 0),
                        ("x", "t", 200_000, 0), ("y", "t", 1_000_000, 0)])
    _gossip_done(net, DIAMOND, 4)
    inv = net.rpc("t").call("invoice", amount_msat=500_000_000, description="big")
    res = net.rpc("s").call("pay", bolt11=inv["bolt11"])
    assert res["route"][0] == net.node_id("y")  # x-t cannot carry 500k sat
    # kill y: the next payment must go through x
    net.process("y").kill()
    wait_for(lambda: not [p for p in net.rpc("s").call("listpeers")
                          if p["node_id"] == net.node_id("y")][0]["connected"], 10,
             what="s notices that y is gone")
    inv = net.rpc("t").call("invoice", amount_msat=50_000_000, description="around")
    res = net.rpc("s").call("pay", bolt11=inv["bolt11"], timeout=30)
    assert res["status"] == "succeeded" and res["route"][0] == net.node_id("x")
    # nothing reaches z, who has no channel at all
    inv = net.rpc("t").call("invoice", amount_msat=900_000_000, description="too big")
    with pytest.raises(RpcError) as info:
        net.rpc("s").call("pay", bolt11=inv["bolt11"], timeout=20)
    assert "no route" in str(info.value)
    net.restart("y")


def test_multi_part_payment_and_mpp_timeout(network_factory):
    links = {"s": ["x", "y"], "x": ["t"], "y": ["t"]}
    net = network_factory(_plans(DIAMOND, links, {}))
    net.wait_connected()
    open_channels(net, [("s", "x", 600_000, 0), ("s", "y", 600_000, 0),
                        ("x", "t", 600_000, 0), ("y", "t", 600_000, 0)])
    _gossip_done(net, DIAMOND, 4)
    inv = net.rpc("t").call("invoice", amount_msat=800_000_000, description="mpp")
    res = net.rpc("s").call("pay", bolt11=inv["bolt11"], timeout=30)
    assert res["status"] == "succeeded" and res["parts"] >= 2
    paid = wait_for(lambda: [i for i in net.rpc("t").call("listinvoices") if
                             i["payment_hash"] == inv["payment_hash"] and
                             i["status"] == "paid"], 10, what="t's invoice paid")[0]
    assert paid["received_msat"] == 800_000_000
    # one part of a 100k sat invoice alone: t holds it, then fails it back
    inv = net.rpc("t").call("invoice", amount_msat=100_000_000, description="half")
    part = net.rpc("s").call("dev_sendpart", bolt11=inv["bolt11"], amount_msat=40_000_000)
    wait_for(lambda: net.sup.collector.events(kind="mpp_timeout", proc="peer t"), 20,
             what="the MPP timeout")
    wait_for(lambda: [p for p in net.rpc("s").call("listpayments")
                      if p["payment_hash"] == part["payment_hash"]][0]["status"] == "failed",
             20, what="the part failed back")
    failure = [p for p in net.rpc("s").call("listpayments")
               if p["payment_hash"] == part["payment_hash"]][0]["failure"]
    assert "mpp_timeout" in failure


def test_new_channel_becomes_usable_and_disabled_one_is_avoided(network_factory):
    names = ["a", "b", "c", "d"]
    links = {"a": ["b"], "b": ["c"], "c": ["d"]}
    net = network_factory(_plans(names, links, {}))
    net.wait_connected()
    open_channels(net, [("a", "b", 1_000_000, 0), ("b", "c", 1_000_000, 0)])
    _gossip_done(net, ["a", "b", "c"], 2)
    inv = net.rpc("d").call("invoice", amount_msat=1_000_000, description="far")
    with pytest.raises(RpcError):
        net.rpc("a").call("pay", bolt11=inv["bolt11"], timeout=10)
    open_channels(net, [("c", "d", 1_000_000, 0)])
    wait_for(lambda: len([c for c in net.rpc("a").call("listgraph")["channels"]
                          if c["policy_1"] and c["policy_2"]]) == 3, 20,
             what="a learns of c-d three hops away")
    inv = net.rpc("d").call("invoice", amount_msat=1_000_000, description="far")
    assert net.rpc("a").call("pay", bolt11=inv["bolt11"])["status"] == "succeeded"
    # c closes c-d: its disabled update reaches a, who no longer routes through it
    cd = [c for c in net.rpc("c").call("listchannels") if c["peer_id"] == net.node_id("d")][0]
    net.rpc("c").call("close", channel_id=cd["channel_id"])

    def disabled_at_a():
        for ch in net.rpc("a").call("listgraph")["channels"]:
            for pol in (ch["policy_1"], ch["policy_2"]):
                if pol and pol["disabled"]:
                    return True
        return len(net.rpc("a").call("listgraph")["channels"]) == 2
    wait_for(disabled_at_a, 20, what="a sees c-d disabled or gone")
    inv = net.rpc("d").call("invoice", amount_msat=1_000_000, description="far")
    with pytest.raises(RpcError) as info:
        net.rpc("a").call("pay", bolt11=inv["bolt11"], timeout=10)
    assert "no route" in str(info.value)


def test_rebalance_moves_liquidity_between_two_of_our_channels(network_factory):
    names = ["a", "b", "c"]
    net = network_factory(_plans(names, {"a": ["b"], "b": ["c"], "c": ["a"]}))
    net.wait_connected()
    open_channels(net, [("a", "b", 1_000_000, 0), ("b", "c", 1_000_000, 0),
                        ("c", "a", 1_000_000, 0)])
    _gossip_done(net, names, 3)
    mine = {ch["peer_id"]: ch for ch in net.rpc("a").call("listchannels")}
    out_ch, in_ch = mine[net.node_id("b")], mine[net.node_id("c")]
    assert in_ch["local_msat"] == 0  # a has no outbound towards c yet
    res = net.rpc("a").call("rebalance", out_channel=out_ch["channel_id"],
                            in_channel=in_ch["channel_id"], amount_msat=100_000_000)
    assert res["status"] == "succeeded"
    _all_quiet(net, names)
    after = {ch["peer_id"]: ch for ch in net.rpc("a").call("listchannels")}
    assert after[net.node_id("c")]["local_msat"] == 100_000_000
    assert out_ch["local_msat"] - after[net.node_id("b")]["local_msat"] == \
        100_000_000 + res["fee_msat"]
    assert worth_conserved(net)


def _held_by_c(network_factory):
    """A line a-b-c whose payee c holds a 20,000 sat keysend from a: the network and the
    payment hash, once c has the HTLC (so b has forwarded it)."""
    names = ["a", "b", "c"]
    net = network_factory(_plans(names, {"a": ["b"], "b": ["c"]}))
    net.wait_connected()
    open_channels(net, [("a", "b", 1_000_000, 0), ("b", "c", 1_000_000, 0)])
    _gossip_done(net, names, 2)
    net.rpc("c").call("dev_hold", hold=True)
    sent = net.rpc("a").call("keysend", node_id=net.node_id("c"), amount_msat=20_000_000,
                             wait=False)
    wait_for(lambda: net.sup.collector.events(kind="htlc_held", proc="peer c"), 20,
             what="c holds the forwarded HTLC")
    return net, sent["payment_hash"]


def test_reconnect_upstream_does_not_forward_again(network_factory):
    """A forwarder whose upstream link drops and comes back while its downstream HTLC
    is still in flight (downstream peer offline) keeps waiting for the downstream
    outcome: it does not forward the HTLC again, fail it upstream and then lose the
    settled amount (found by chaos seed 13)."""
    net, payment_hash = _held_by_c(network_factory)
    net.process("c").stop()  # the downstream peer goes away with the HTLC
    wait_for(lambda: not any(p["connected"] for p in net.rpc("b").call("listpeers")
                             if p["node_id"] == net.node_id("c")), 20, what="b sees c gone")
    reestablished = len(net.sup.collector.events(kind="channel_reestablished", proc="peer b"))
    net.rpc("a").call("dev_linkfault", node_id=net.node_id("b"), kind="gap")  # a-b drops
    wait_for(lambda: len(net.sup.collector.events(kind="channel_reestablished",
                                                  proc="peer b")) > reestablished,
             20, what="b reestablished its channel with a")
    # a probe over the same session: once it is through, a has seen whatever b sent
    # about the first HTLC when the channel came back
    probe = net.rpc("a").call("keysend", node_id=net.node_id("b"), amount_msat=1_000_000)
    assert probe["status"] == "succeeded"
    status = lambda: next(p["status"] for p in net.rpc("a").call("listpayments")  # noqa: E731
                          if p["payment_hash"] == payment_hash)
    assert status() == "pending", "b failed the HTLC upstream though c may still settle it"
    net.restart("c", died_on_purpose=True)  # c comes back (not holding) and settles
    wait_for(lambda: status() == "succeeded", 30, what="the payment succeeded")
    assert not net.sup.collector.events(kind="channel_failed")
    assert not net.sup.collector.events(kind="forward_upstream_lost")
    worth_conserved(net)


@pytest.mark.parametrize("closer,claim", [("b", "htlc-success"), ("a", "htlc claim")],
                         ids=["our-commitment", "their-commitment"])
def test_a_forward_settled_after_its_upstream_went_on_chain_is_claimed_there(
        network_factory, closer, claim):
    """A forwarder whose upstream channel is on chain when the downstream settles claims
    the upstream HTLC on chain with the preimage (BOLT 5) at once, before the upstream
    peer can time it out: the payer learns the preimage from the chain and succeeds
    (chaos seed 13: the forwarder kept the preimage but never used it, and lost the
    amount to the upstream peer's timeout claim)."""
    from tests.lnhelpers import mine_until
    net, payment_hash = _held_by_c(network_factory)
    upstream = next(ch["channel_id"] for ch in net.rpc("b").call("listchannels")
                    if ch["peer_id"] == net.node_id("a"))
    net.rpc(closer).call("close", channel_id=upstream, force=True)
    closing = wait_for(lambda: [e["data"]["txid"] for e in net.sup.collector.events(
        kind="tx_broadcast", proc=f"peer {closer}") if e["data"]["purpose"] == "force close"
        and e["data"]["channel_id"] == upstream.hex()], 20, what=f"{closer} force-closes")
    # one block, no more: c settles below only while the HTLC is min_final_cltv blocks
    # from its expiry (BOLT 4), and the payer gave it 2 blocks more than that
    mine_until(net, lambda: net.chain.call("gettx", txid=bytes.fromhex(closing[0]))[
        "status"] == "confirmed", 30, what=f"{closer}'s commitment of the a-b channel mined")
    wait_for(lambda: [e for e in net.sup.collector.events(kind="funding_spent", proc="peer b")
                      if e["data"]["channel_id"] == upstream.hex()], 30,
             what=f"b saw {closer}'s commitment of the a-b channel confirmed")
    net.process("c").stop()
    net.restart("c", died_on_purpose=True)  # back, not holding: it settles with b
    wait_for(lambda: net.sup.collector.events(kind="forward_settled", proc="peer b"), 30,
             what="b learned the preimage downstream")
    wait_for(lambda: [e for e in net.sup.collector.events(kind="tx_broadcast", proc="peer b")
                      if e["data"]["purpose"] == claim], 10,
             what="b claimed the upstream HTLC on chain")
    status = lambda: next(p["status"] for p in net.rpc("a").call("listpayments")  # noqa: E731
                          if p["payment_hash"] == payment_hash)
    assert mine_until(net, lambda: status() != "pending", 60,
                      what="the payment resolved") and status() == "succeeded"
    assert not net.sup.collector.events(kind="forward_upstream_lost")
    mine_until(net, lambda: all(ch["state"] == "CLOSED" for n in ("a", "b")
                                for ch in net.rpc(n).call("listchannels")
                                if ch["channel_id"] == upstream), 60,
               what="a and b swept what they have on chain")
    worth_conserved(net)
