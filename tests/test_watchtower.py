"""Watchtowers: the encrypted justice blob, the tower's store, and a breach punished while
the victim is offline for longer than ``to_self_delay`` (and, without a tower, not)."""
from __future__ import annotations

import asyncio
import logging
import os
from types import SimpleNamespace
from typing import Any

import pytest

from emulator import policy
from emulator.crypto.keys import pubkey_from_privkey
from emulator.network import Network, PeerPlan
from emulator.scenario import ScenarioError, parse_scenario
from emulator.tx import Tx, TxIn, TxOut
from emulator.waiting import wait_for
from peers import sweeps
from peers.commitment import commitment_fee_sat
from peers.scripts import to_local_policy
from peers.store import Store
from peers.watchtower import (
    BLOB_BYTES,
    RECORD_BYTES,
    TowerBlobError,
    TowerServer,
    breach_hint,
    open_blob,
    seal,
)
from tests.lnhelpers import channel, mine_until, open_channel, pay, quiet, state, wealth

CAPACITY = 1_000_000
AMOUNT_MSAT = 50_000_000
TO_SELF_DELAY = 6  # the test timer profile's


# --- unit: the blob and the tower's store ------------------------------------------------
def breach_and_justice(outputs: int = 1) -> tuple[Tx, Tx]:
    """A fake revoked commitment with ``outputs`` to_local-shaped outputs, and its justice."""
    revocation_privkey = os.urandom(32)
    revocation_pubkey = pubkey_from_privkey(revocation_privkey)
    cond = to_local_policy(revocation_pubkey, pubkey_from_privkey(os.urandom(32)), 144)
    breach = Tx([TxIn(os.urandom(32), 0, 0x80000000)],
                [TxOut(100_000 + i, cond) for i in range(outputs)], 0x20000000)
    revocable = sweeps.revocable_outputs(breach, revocation_pubkey)
    justice = sweeps.justice_tx(breach, revocable, revocation_privkey,
                                policy.pk(pubkey_from_privkey(os.urandom(32))), 5000)
    return breach, justice


def test_blob_round_trip_and_fixed_size():
    for outputs in (1, 4, 10):
        breach, justice = breach_and_justice(outputs)
        hint, blob = seal(breach.txid, justice)
        assert hint == breach_hint(breach.txid) and len(hint) == 16
        assert len(blob) == BLOB_BYTES  # the size says nothing about the commitment
        opened = open_blob(breach.txid, blob)
        assert opened.txid == justice.txid and opened.to_wire() == justice.to_wire()


def test_blob_does_not_open_without_the_txid():
    breach, justice = breach_and_justice()
    _, blob = seal(breach.txid, justice)
    other, _ = breach_and_justice()
    with pytest.raises(TowerBlobError):
        open_blob(other.txid, blob)  # the wrong key fails the Poly1305 tag
    with pytest.raises(TowerBlobError):
        open_blob(breach.txid[:-1] + bytes([breach.txid[-1] ^ 1]), blob)
    assert justice.serialize() not in blob  # the tower cannot read it


class StubNode:
    """What TowerServer needs of a peer: a store, events, links, a broadcaster."""

    def __init__(self, path: Any) -> None:
        self.store = Store(path)
        self.log = logging.getLogger("tower-test")
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[tuple[bytes, str, dict[str, Any]]] = []
        self.broadcasts: list[Tx] = []
        self.events = SimpleNamespace(emit=lambda kind, **data: self.emitted.append((kind, data)))
        self.links = SimpleNamespace(send=self._send)

    async def _send(self, node_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        self.sent.append((node_id, type_name, body))

    async def broadcast(self, tx: Tx, purpose: str, channel_id: bytes = b"") -> None:
        self.broadcasts.append(tx)


def test_tower_stores_one_fixed_size_record_per_backup(tmp_path):
    node = StubNode(tmp_path / "tower.sqlite")
    tower = TowerServer(node)
    client = b"\x02" + b"\x11" * 32
    pairs = [breach_and_justice(1 + i % 5) for i in range(12)]

    async def back_up() -> None:
        for breach, justice in pairs:
            hint, blob = seal(breach.txid, justice)
            await tower.on_backup(client, {"hint": hint, "blob": blob})
        await tower.on_backup(client, {"hint": hint, "blob": blob})  # a resend: stored once
        await tower.on_backup(client, {"hint": hint, "blob": blob[:-1]})  # refused
    asyncio.run(back_up())
    assert tower.stats() == {"records": len(pairs), "bytes": len(pairs) * RECORD_BYTES}
    assert [kind for kind, _ in node.emitted] == ["tower_backup_stored"] * len(pairs)
    assert [t for _, t, _ in node.sent] == ["tower_ack"] * (len(pairs) + 1)
    node.store.close()


def test_tower_broadcasts_justice_when_the_breach_is_in_a_block(tmp_path):
    node = StubNode(tmp_path / "tower.sqlite")
    tower = TowerServer(node)
    breach, justice = breach_and_justice(2)
    hint, blob = seal(breach.txid, justice)
    bystander, _ = breach_and_justice()

    async def run() -> None:
        await tower.on_backup(b"\x02" + b"\x11" * 32, {"hint": hint, "blob": blob})
        # another client files garbage under the same hint: it cannot spoil the real one
        await tower.on_backup(b"\x03" + b"\x22" * 32, {"hint": hint, "blob": bytes(BLOB_BYTES)})
        await tower.on_block(10, [bystander])
        assert node.broadcasts == []
        await tower.on_block(11, [bystander, breach])
        await tower.on_block(11, [breach])  # a replay after a restart: broadcast, no new events
    asyncio.run(run())
    assert [tx.txid for tx in node.broadcasts] == [justice.txid, justice.txid]
    kinds = [kind for kind, _ in node.emitted]
    assert kinds.count("tower_breach_seen") == 1 and kinds.count("tower_justice") == 1
    node.store.close()


def test_scenario_watchtower_keys_are_checked():
    peers = """
[[peers]]
name = "bob"
watchtower = "%s"
[[peers]]
name = "tw"
tower = %s
"""
    scenario = parse_scenario(peers % ("tw", "true"))
    assert scenario.peer("bob").watchtower == "tw" and scenario.peer("tw").tower
    with pytest.raises(ScenarioError, match=r"peers\[0\]\.watchtower: unknown peer 'tww'.*'tw'"):
        parse_scenario(peers % ("tww", "true"))
    with pytest.raises(ScenarioError, match="'tw' is not a tower"):
        parse_scenario(peers % ("tw", "false"))
    with pytest.raises(ScenarioError, match="its own watchtower"):
        parse_scenario(peers % ("bob", "true"))


# --- process: a victim offline for longer than to_self_delay -------------------------------
def backups_done(net: Network) -> bool:
    """Every revocation bob received is stored at the tower."""
    revocations = [e for e in net.sup.collector.events(kind="revocation", proc="peer bob")
                   if e["data"]["side"] == "remote"]
    stored = net.sup.collector.events(kind="tower_backup_stored", proc="peer tw")
    return bool(revocations) and len(stored) == len(revocations)


def wallet(net: Network, name: str) -> int:
    return net.rpc(name).call("walletbalance")["confirmed_sat"]


def mine_one_by_one(net: Network, blocks: int, names: tuple[str, ...]) -> None:
    """Mine ``blocks`` blocks, each once ``names`` have seen the one before."""
    for _ in range(blocks):
        net.chain.call("mine", n=1)
        height = net.chain.call("getheight")
        wait_for(lambda h=height: all(net.rpc(n).call("getinfo")["blockheight"] >= h
                                      for n in names), 10, what=f"{names} at height {height}")


def pay_times(net: Network, cid: bytes, times: int) -> None:
    for _ in range(times):
        pay(net, "alice", "bob", AMOUNT_MSAT)
    wait_for(lambda: quiet(net, cid, ("alice", "bob")), 10, what="channel quiet")


def pay_three_times(net: Network) -> bytes:
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay_times(net, cid, 3)
    return cid


@pytest.mark.process
def test_tower_punishes_while_the_victim_is_offline(network_factory):
    net = network_factory([PeerPlan("alice", 2_000_000, ("bob",)),
                           PeerPlan("bob", 1_000_000, watchtower="tw"),
                           PeerPlan("tw", tower=True)])
    net.wait_connected()
    cid = open_channel(net, "alice", "bob", CAPACITY)
    pay_times(net, cid, 1)
    wait_for(lambda: backups_done(net), 10, what="every revocation backed up at the tower")
    net.process("tw").stop()  # backups queue at bob while the tower is away
    pay_times(net, cid, 2)
    assert not backups_done(net)
    net.restart("tw")
    wait_for(lambda: backups_done(net), 20, what="queued backups flushed to the tower")
    alice_before, bob_before = wallet(net, "alice"), wallet(net, "bob")
    net.process("bob").stop()  # the victim goes offline (marked expected)
    cheat = net.rpc("alice").call("cheat", channel_id=cid)  # the latest revoked state
    mine_one_by_one(net, 2 * TO_SELF_DELAY, ("alice", "tw"))
    breach = net.chain.call("gettx", txid=cheat["txid"])
    assert breach["status"] == "confirmed"
    justice_events = net.sup.collector.events(kind="tower_justice", proc="peer tw")
    assert len(justice_events) == 1 and justice_events[0]["data"]["breach_txid"] == cheat["txid"].hex()
    assert net.sup.collector.events(kind="tower_breach_seen", proc="peer tw")
    justice = net.chain.call("gettx", txid=justice_events[0]["data"]["txid"])
    assert justice["status"] == "confirmed"
    assert net.sup.collector.events(kind="penalty"), "the chain saw no revocation spend"
    bob_key = net.wallet_key("bob")
    assert [o["cond"] for o in justice["tx"]["outputs"]] == [policy.pk(bob_key)]
    breach_outputs = breach["tx"]["outputs"]
    assert len(breach_outputs) == 3  # alice's to_local, her HTLC in flight, bob's to_remote
    assert len(justice["tx"]["inputs"]) == 2  # everything of alice's in the channel
    assert wallet(net, "alice") == alice_before, "the cheater got something back"

    net.restart("bob")
    mine_until(net, lambda: state(net, "bob", cid) == "CLOSED", what="bob sees it all resolved")
    net.wait_synced()
    breach_total = sum(o["amount_sat"] for o in breach_outputs)
    bob_gain = wallet(net, "bob") - bob_before
    assert breach_total - 5_000 < bob_gain < breach_total  # everything but two sweeps' fees
    assert wallet(net, "alice") == alice_before
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat


@pytest.mark.process
def test_without_a_tower_the_cheater_keeps_the_money(network_factory):
    net = network_factory([PeerPlan("alice", 2_000_000, ("bob",)),
                           PeerPlan("bob", 1_000_000)])
    cid = pay_three_times(net)
    info = channel(net, "alice", cid)
    alice_before, bob_before = wallet(net, "alice"), wallet(net, "bob")
    net.process("bob").stop()
    # the state after two payments: no HTLC in flight (a payment takes two commitments)
    revoked = info["commitment_number"] - 2
    cheat = net.rpc("alice").call("cheat", channel_id=cid, commitment_number=revoked)

    def swept() -> list[dict[str, Any]]:
        return [e for e in net.sup.collector.events(kind="tx_confirmed", proc="peer alice")
                if e["data"].get("purpose") == "to_local sweep"]
    mine_until(net, swept, what="alice sweeps her to_local after to_self_delay")
    breach = net.chain.call("gettx", txid=cheat["txid"])["tx"]
    to_local_sat = CAPACITY - 2 * AMOUNT_MSAT // 1000 - commitment_fee_sat(
        info["feerate_per_kw"], 0)
    to_remote = [o["amount_sat"] for o in breach["outputs"] if o["cond"][0] == "pk"]
    to_local = [o["amount_sat"] for o in breach["outputs"] if o["cond"][0] != "pk"]
    assert to_local == [to_local_sat] and len(to_remote) == 1  # no HTLC output
    sweep = net.chain.call("gettx", txid=swept()[0]["data"]["txid"])["tx"]
    alice_gain = wallet(net, "alice") - alice_before
    assert alice_gain == sweep["outputs"][0]["amount_sat"]
    assert to_local_sat - 1_000 < alice_gain < to_local_sat  # the revoked state's balance
    assert not net.sup.collector.events(kind="penalty")

    net.restart("bob")  # too late: the output is gone
    mine_until(net, lambda: state(net, "bob", cid) == "CLOSED", what="bob resolves the channel")
    net.wait_synced()
    assert not net.sup.collector.events(kind="penalty"), "bob punished a spent output"
    bob_gain = wallet(net, "bob") - bob_before
    assert to_remote[0] - 1_000 < bob_gain < to_remote[0]  # only his own to_remote
    assert wallet(net, "alice") - alice_before == alice_gain
    assert net.chain.call("verify")["ok"]
    assert wealth(net) == net.supply_sat
