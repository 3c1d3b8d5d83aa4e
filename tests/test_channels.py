"""Channels end to end: payments both ways, cooperative close, penalty, force close."""
from __future__ import annotations

import pytest

from emulator.network import PeerPlan
from emulator.rpc import RpcError
from emulator.waiting import wait_for
from tests.lnhelpers import (
    channel,
    mine_until,
    open_channel,
    pay,
    quiet,
    state,
    wealth,
)

pytestmark = pytest.mark.process
PAIR = [PeerPlan("alice", 2_000_000, ("bob",)), PeerPlan("bob", 1_000_000)]
CAPACITY = 1_000_000


def test_payments_both_ways_then_cooperative_close(network_factory):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY, push_msat=300_000_000)
    a = channel(net, "alice", cid)
    fee_msat = CAPACITY * 1000 - a["local_msat"] - a["remote_msat"]
    assert a["remote_msat"] == 300_000_000 and fee_msat == 0  # fee is paid from to_local
    expect_alice, expect_bob = a["local_msat"], a["remote_msat"]
    for i in range(500):
        amount = 1_000 + 7 * i
        pay(net, "alice", "bob", amount)
        pay(net, "bob", "alice", amount + 3)
        expect_alice += 3
        expect_bob -= 3
        if i % 100 == 99:
            wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
            assert channel(net, "alice", cid)["local_msat"] == expect_alice
            assert channel(net, "bob", cid)["local_msat"] == expect_bob
    payments = net.rpc("alice").call("listpayments")
    assert len(payments) == 500 and all(p["status"] == "succeeded" for p in payments)
    wallets_before = net.balances()
    net.rpc("alice").call("close", channel_id=cid)
    mine_until(net, lambda: state(net, "alice", cid) == "CLOSED" and
               state(net, "bob", cid) == "CLOSED", what="both sides CLOSED")
    closing_txid = channel(net, "alice", cid)["onchain"]["commitment_txid"]
    closing = net.chain.call("gettx", txid=closing_txid)["tx"]
    outputs = sorted(o["amount_sat"] for o in closing["outputs"])
    fee_sat = net.sup.collector.events(kind="channel_closing", proc="peer alice")[0]["data"][
        "fee_sat"]
    # each side's balance rounded down to the satoshi; the opener's output carries the fee
    assert outputs == sorted([expect_alice // 1000 - fee_sat, expect_bob // 1000])
    remainders_msat = expect_alice % 1000 + expect_bob % 1000
    assert (CAPACITY - sum(outputs)) * 1000 == fee_sat * 1000 + remainders_msat
    after = net.balances()
    assert after["bob"] - wallets_before["bob"] == expect_bob // 1000
    assert after["alice"] - wallets_before["alice"] == expect_alice // 1000 - fee_sat
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat


def test_cheater_loses_everything_in_the_channel(network_factory):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    for _ in range(3):
        pay(net, "alice", "bob", 50_000_000)
    net.rpc("bob").call("dev_hold", hold=True)
    inv = net.rpc("bob").call("invoice", amount_msat=20_000_000, description="held")
    net.rpc("alice").call("pay", bolt11=inv["bolt11"], wait=False)
    wait_for(lambda: channel(net, "bob", cid)["htlcs"] and
             net.sup.collector.events(kind="htlc_held"), 10, what="HTLC held by bob")
    alice_wallet, bob_wallet = net.balances()["alice"], net.balances()["bob"]
    cheat = net.rpc("alice").call("cheat", channel_id=cid)
    mine_until(net, lambda: state(net, "bob", cid) == "CLOSED", what="bob punished alice")
    assert net.sup.collector.events(kind="penalty"), "the chain saw no revocation spend"
    assert net.sup.collector.events(kind="justice")
    breach = net.chain.call("gettx", txid=cheat["txid"])["tx"]
    breach_total = sum(o["amount_sat"] for o in breach["outputs"])
    net.wait_synced()
    after = net.balances()
    assert after["alice"] == alice_wallet, "the cheater got something back"
    bob_gain = after["bob"] - bob_wallet
    assert breach_total - 5_000 < bob_gain < breach_total  # everything but sweep fees
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat


def test_old_signatures_are_kept_apart_and_survive_a_restart(network_factory):
    """The peer's signatures of our revoked commitments (what ``cheat`` broadcasts) are
    written once each, to a table of their own, not with every write of the channel;
    after a restart every one of them can still be broadcast (and is punished)."""
    import contextlib
    import sqlite3

    import msgpack
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    for _ in range(3):
        pay(net, "alice", "bob", 50_000_000)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="the channel at rest")
    net.restart("alice")
    net.wait_connected()
    db_path = net.run_dir / "alice" / "peer.sqlite"
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        kept = dict(db.execute("SELECT ctn, sig FROM old_sigs"))
        record = msgpack.unpackb(db.execute("SELECT data FROM channels").fetchone()[0],
                                 raw=False, strict_map_key=False)
    assert len(kept) >= 6 and record["old_sigs"] == []  # each payment revokes two
    cheat = net.rpc("alice").call("cheat", channel_id=cid, commitment_number=min(kept))
    assert cheat["commitment_number"] == min(kept)
    mine_until(net, lambda: state(net, "bob", cid) == "CLOSED", what="bob punished alice")
    assert wealth(net) == net.supply_sat


def test_force_close_resolves_every_htlc_on_chain(network_factory):
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY, push_msat=400_000_000)
    net.rpc("bob").call("dev_hold", hold=True)
    net.rpc("alice").call("dev_hold", hold=True)
    bob_inv = net.rpc("bob").call("invoice", amount_msat=30_000_000, description="claimed")
    alice_inv = net.rpc("alice").call("invoice", amount_msat=40_000_000, description="claimed")
    net.rpc("alice").call("pay", bolt11=bob_inv["bolt11"], wait=False)      # bob: preimage
    net.rpc("alice").call("dev_sendhtlc", node_id=net.node_id("bob"),
                          amount_msat=50_000_000)                            # times out
    net.rpc("bob").call("pay", bolt11=alice_inv["bolt11"], wait=False)      # alice: preimage
    wait_for(lambda: len(channel(net, "alice", cid)["htlcs"]) == 3 and
             len(channel(net, "bob", cid)["htlcs"]) == 3, 10, what="3 HTLCs committed")
    net.rpc("alice").call("close", channel_id=cid, force=True)
    mine_until(net, lambda: state(net, "alice", cid) == "CLOSED" and
               state(net, "bob", cid) == "CLOSED", 90, what="every HTLC resolved")
    by_hash = {p["payment_hash"]: p["status"] for p in net.rpc("alice").call("listpayments")}
    assert by_hash[bob_inv["payment_hash"]] == "succeeded"
    assert sorted(by_hash.values()) == ["failed", "succeeded"]
    assert net.rpc("bob").call("listpayments")[0]["status"] == "succeeded"
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat


def test_bad_requests_on_channels_are_typed(network_factory):
    net = network_factory(PAIR)
    net.wait_connected()
    alice = net.rpc("alice")
    for args, code in [
        ({"node_id": net.node_id("bob"), "amount_sat": 10}, "bad_request"),
        ({"node_id": net.node_id("bob"), "amount_sat": 10**9}, "bad_request"),
        ({"node_id": "02" + "00" * 32, "amount_sat": 100_000}, "channel_error"),
        ({"node_id": net.node_id("bob"), "amount_sat": 100_000, "push_msat": -1},
         "bad_request"),
    ]:
        with pytest.raises(RpcError) as info:
            alice.call("fundchannel", **args)
        assert info.value.code == code, (args, info.value)
    with pytest.raises(RpcError) as info:
        alice.call("pay", bolt11="lnbcrt1garbage")
    assert info.value.code == "bad_request"
    with pytest.raises(RpcError) as info:
        alice.call("close", channel_id="00" * 32)
    assert info.value.code == "not_found"
    assert alice.call("getinfo")["alias"] == "alice"


def test_updates_made_before_the_peer_reestablishes_are_sent_after_it(network_factory):
    """After a reconnection nothing may precede channel_reestablish, so an HTLC added
    meanwhile is held; it goes out once the peer's channel_reestablish is in, before
    the commitment_signed that covers it (found by chaos seed 6: it was never sent,
    and the peer failed the channel over a commitment with an HTLC it never saw)."""
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay(net, "alice", "bob", 10_000_000)
    # alice's next commitment stays unanswered across the reconnection: her next one
    # can only follow bob's (retransmitted) revoke_and_ack
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")

    def bob_revoked() -> int:
        return sum(1 for e in net.sup.collector.events(kind="revocation", proc="peer bob")
                   if e["data"]["side"] == "local")
    revoked = bob_revoked()
    net.rpc("bob").call("dev_withhold_revoke", withhold=True)
    first = net.rpc("alice").call("keysend", node_id=net.node_id("bob"),
                                  amount_msat=20_000_000, wait=False)
    wait_for(lambda: bob_revoked() > revoked, 10, what="bob revoked without telling alice")
    net.rpc("bob").call("dev_withhold_revoke", withhold=False)
    # alice takes bob's channel_reestablish in 1.5 s late: her HTLC meanwhile is
    # held, and her next commitment follows bob's revoke_and_ack, after the reestablish
    net.rpc("alice").call("dev_delay_reestablish", seconds=1.5)
    connected = len(net.sup.collector.events(kind="connected", proc="peer alice"))
    net.rpc("alice").call("dev_linkfault", node_id=net.node_id("bob"), kind="gap")
    wait_for(lambda: len(net.sup.collector.events(kind="connected", proc="peer alice"))
             > connected, 10, what="alice reconnected")
    second = net.rpc("alice").call("keysend", node_id=net.node_id("bob"),
                                   amount_msat=30_000_000, wait=False)
    log = net.process("alice").log_path
    wait_for(lambda: "update_add_htlc held until channel_reestablish" in log.read_text(),
             10, what="alice's HTLC held while bob has not reestablished")

    def status(sent: dict) -> str:
        return next(p["status"] for p in net.rpc("alice").call("listpayments")
                    if p["payment_hash"] == sent["payment_hash"])
    wait_for(lambda: "pending" not in (status(first), status(second)), 20,
             what="both payments finished")
    assert (status(first), status(second)) == ("succeeded", "succeeded")
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
    assert channel(net, "bob", cid)["local_msat"] == 60_000_000
    assert not net.sup.collector.events(kind="channel_failed")


def test_a_peer_restored_from_an_old_backup_never_broadcasts_its_stale_state(network_factory):
    """option_data_loss_protect: alice comes back from an old copy of her data. Both ends
    see it at channel_reestablish; bob closes with his latest commitment, alice does
    not broadcast her stale one (bob would take everything with a revocation key) and
    sweeps her balance from bob's commitment. No penalty, money conserved."""
    import shutil
    net = network_factory(PAIR, allow_errors=("lost data", "lost channel state"))
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay(net, "alice", "bob", 100_000_000)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
    data = net.process("alice").data_dir
    net.process("alice").stop()
    backup = data.parent / "alice-backup"
    shutil.copytree(data, backup)
    net.restart("alice")
    net.wait_connected()
    for _ in range(2):
        pay(net, "alice", "bob", 50_000_000)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
    latest = channel(net, "alice", cid)["local_msat"]
    wallet_before = net.balances()["alice"]
    net.process("alice").stop()
    shutil.rmtree(data)
    shutil.copytree(backup, data)  # alice is back two payments behind
    net.restart("alice")
    wait_for(lambda: net.sup.collector.events(kind="data_loss", proc="peer alice"), 20,
             what="alice sees she lost data")
    mine_until(net, lambda: state(net, "alice", cid) == "CLOSED" and
               state(net, "bob", cid) == "CLOSED", what="both sides CLOSED")
    closings = net.sup.collector.events(kind="channel_closing", proc="peer alice")
    assert closings and all(c["data"]["kind"] == "await_remote" for c in closings)
    assert not net.sup.collector.events(kind="penalty"), "alice broadcast a revoked state"
    net.wait_synced()
    gained = net.balances()["alice"] - wallet_before
    assert latest // 1000 - 1_000 < gained <= latest // 1000  # her latest balance, less a fee
    assert wealth(net) == net.supply_sat


def test_a_sweep_taken_out_by_a_reorg_is_broadcast_again(network_factory):
    """alice's to_local sweep confirms, then a reorg drops it (it does not even go back
    to the mempool): alice notices and broadcasts it again; nothing is lost."""
    net = network_factory(PAIR)
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay(net, "alice", "bob", 100_000_000)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")
    net.rpc("alice").call("close", channel_id=cid, force=True)

    def sweeps() -> list[dict]:
        return [e for e in net.sup.collector.events(kind="tx_confirmed", proc="peer alice")
                if e["data"].get("purpose") == "to_local sweep"]
    mine_until(net, sweeps, what="alice's to_local sweep confirmed")
    txid = bytes.fromhex(sweeps()[0]["data"]["txid"])
    height = net.chain.call("getheight")
    depth = height - net.chain.call("gettx", txid=txid)["height"] + 1
    reorg = net.chain.call("reorg", depth=depth, drop=[txid])
    assert txid in reorg["dropped"]  # gone: neither in a block nor in the mempool
    mine_until(net, lambda: net.sup.collector.events(kind="tx_reorged_out", proc="peer alice"),
               what="alice sees her sweep reorged out")
    mine_until(net, lambda: net.chain.call("gettx", txid=txid)["status"] == "confirmed",
               what="the sweep confirmed again")
    mine_until(net, lambda: state(net, "alice", cid) == "CLOSED" and
               state(net, "bob", cid) == "CLOSED", what="both sides CLOSED")
    assert wealth(net) == net.supply_sat
