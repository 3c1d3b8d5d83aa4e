"""Crash safety: a peer exits at every message boundary of the add/fulfill and add/fail
flows (an in-process crash point), restarts from disk, reestablishes and finishes."""
from __future__ import annotations

import pytest

from emulator.network import PeerPlan
from emulator.rpc import RpcError, RpcTimeout
from emulator.waiting import wait_for
from tests.lnhelpers import channel, open_channel, quiet

pytestmark = pytest.mark.process
PAIR = [PeerPlan("alice", 2_000_000, ("bob",)), PeerPlan("bob", 1_000_000)]
CAPACITY = 500_000
AMOUNT = 12_345_000

# (who, what it sends, what it receives) in a direct payment alice -> bob
PAYER_SENDS = [("update_add_htlc", 1), ("commitment_signed", 1), ("revoke_and_ack", 1),
               ("revoke_and_ack", 2), ("commitment_signed", 2)]
PAYER_RECEIVES = [("revoke_and_ack", 1), ("commitment_signed", 1), ("commitment_signed", 2),
                  ("revoke_and_ack", 2)]
PAYEE_SENDS = [("revoke_and_ack", 1), ("commitment_signed", 1), ("commitment_signed", 2),
               ("revoke_and_ack", 2)]
PAYEE_RECEIVES = [("update_add_htlc", 1), ("commitment_signed", 1), ("revoke_and_ack", 1),
                  ("revoke_and_ack", 2), ("commitment_signed", 2)]


def _points(flow: str) -> list[tuple[str, str, str, int]]:
    removal = "update_fulfill_htlc" if flow == "fulfill" else "update_fail_htlc"
    points = []
    for who, sends, receives in (("alice", PAYER_SENDS, PAYER_RECEIVES + [(removal, 1)]),
                                 ("bob", PAYEE_SENDS + [(removal, 1)], PAYEE_RECEIVES)):
        for msg, nth in sends:
            points += [(who, "before_send", msg, nth), (who, "after_send", msg, nth)]
        for msg, nth in receives:
            points += [(who, "before_recv", msg, nth), (who, "after_recv", msg, nth)]
    return [(flow, *p) for p in points]


POINTS = _points("fulfill") + [p for p in _points("fail") if "fail" in p[3]]


@pytest.mark.parametrize("flow,who,phase,msg,nth", POINTS,
                         ids=[f"{f}-{w}-{p}-{m}-{n}" for f, w, p, m, n in POINTS])
def test_crash_at_every_boundary_then_recover(network_factory, flow, who, phase, msg, nth):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    net.rpc(who).call("dev_crashat", point=f"{phase}:{msg}:{nth}")
    try:
        if flow == "fulfill":
            inv = net.rpc("bob").call("invoice", amount_msat=AMOUNT, description="crash")
            net.rpc("alice").call("pay", bolt11=inv["bolt11"], wait=False, reply_timeout=3)
        else:  # a payment hash bob has no invoice for: bob fails it back
            net.rpc("alice").call("dev_sendhtlc", node_id=net.node_id("bob"),
                                  amount_msat=AMOUNT, reply_timeout=3)
    except (RpcTimeout, RpcError):
        assert who == "alice", "the payer's call may only fail when the payer crashed"
    assert net.wait_dead(who) == 137
    net.restart(who, died_on_purpose=True)
    net.wait_connected()
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 30, what="channel settled again")
    a, b = channel(net, "alice", cid), channel(net, "bob", cid)
    assert a["state"] == b["state"] == "OPEN"
    assert a["local_msat"] + a["remote_msat"] == CAPACITY * 1000
    payments = net.rpc("alice").call("listpayments")
    assert len(payments) == 1 and payments[0]["status"] in ("succeeded", "failed")
    if payments[0]["status"] == "succeeded":
        assert flow == "fulfill" and b["local_msat"] == AMOUNT
    else:
        assert b["local_msat"] == 0
