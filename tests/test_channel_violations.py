"""A peer that breaks BOLT 2 gets an error and the channel force-closes — never a crash,
never lost funds; a message for an unknown channel only gets a warning."""
from __future__ import annotations

import os

import pytest

from emulator.network import PeerPlan
from emulator.waiting import wait_for
from tests.lnhelpers import channel, mine_until, open_channel, pay, quiet, state, wealth

pytestmark = pytest.mark.process
PAIR = [PeerPlan("alice", 2_000_000, ("bob",)), PeerPlan("bob", 1_000_000)]
CAPACITY = 600_000
NODE = bytes.fromhex("02" + "11" * 32)


def _add(cid: bytes, htlc_id: int, amount_msat: int) -> dict:
    return {"channel_id": cid, "id": htlc_id, "amount_msat": amount_msat,
            "payment_hash": os.urandom(32), "cltv_expiry": 400,
            "onion_routing_packet": bytes(1366)}


def _bad_signature(net, cid):
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="update_add_htlc",
                          body=_add(cid, 0, 5_000_000))
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="commitment_signed",
                          body={"channel_id": cid, "signature": bytes(64),
                                "htlc_signatures": [bytes(64)]})


def _over_limit(net, cid):
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="update_add_htlc",
                          body=_add(cid, 0, (CAPACITY + 1) * 1000))


def _id_out_of_order(net, cid):
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="update_add_htlc",
                          body=_add(cid, 7, 5_000_000))


def _wrong_revocation_secret(net, cid):
    net.rpc("alice").call("dev_withhold_revoke", withhold=True)
    inv = net.rpc("bob").call("invoice", amount_msat=5_000_000, description="x")
    net.rpc("alice").call("pay", bolt11=inv["bolt11"], wait=False)
    wait_for(lambda: net.sup.collector.events(kind="revocation", proc="peer alice"), 10,
             what="alice revoked (but withheld it)")
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="revoke_and_ack",
                          body={"channel_id": cid, "per_commitment_secret": os.urandom(32),
                                "next_per_commitment_point": NODE})


@pytest.mark.parametrize("violation", [_bad_signature, _over_limit, _id_out_of_order,
                                       _wrong_revocation_secret],
                         ids=["bad_signature", "htlc_over_limit", "id_out_of_order",
                              "wrong_revocation_secret"])
def test_violation_fails_the_channel_without_losing_funds(network_factory, violation):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay(net, "alice", "bob", 50_000_000)
    violation(net, cid)
    failed = wait_for(lambda: net.sup.collector.events(kind="channel_failed", proc="peer bob"),
                      10, what="bob fails the channel")
    assert failed[0]["data"]["reason"]
    mine_until(net, lambda: state(net, "alice", cid) == "CLOSED" and
               state(net, "bob", cid) == "CLOSED", 90, what="channel closed on chain")
    assert net.rpc("bob").call("getinfo")["alias"] == "bob"  # alive
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat
    balances = net.balances()
    # bob keeps at least what he was paid, less the fees of his sweeps
    assert balances["bob"] >= 1_000_000 + 50_000 - 2_000


def test_unknown_channel_gets_a_warning_and_the_channel_continues(network_factory):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    net.rpc("alice").call("dev_sendraw", node_id=net.node_id("bob"), type="update_add_htlc",
                          body=_add(os.urandom(32), 0, 5_000_000))
    wait_for(lambda: net.sup.collector.events(kind="received_warning", proc="peer alice"), 10,
             what="alice is warned")
    pay(net, "alice", "bob", 7_000_000)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
    assert channel(net, "bob", cid)["local_msat"] == 7_000_000
