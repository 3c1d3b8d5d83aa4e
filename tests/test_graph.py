"""A peer's network view: channels, updates, node announcements, edges, persistence."""
from __future__ import annotations

import msgpack
import pytest

from emulator.crypto.bolt11 import RouteHintHop
from emulator.identity import child_secret, node_secret, pubkey
from peers.gossip import (
    BadUpdateSignature,
    ConflictingAnnouncement,
    ConflictingUpdate,
    MalformedGossip,
    StaleUpdate,
    UnknownChannel,
    UnknownNode,
    announcement_signatures,
    channel_announcement_body,
    complete_channel_announcement,
    make_channel_update,
    make_node_announcement,
)
from peers.graph import UNKNOWN_CAPACITY_MSAT, Edge, Graph, edges_from_route_hints

CHAIN_HASH = b"\x06" * 32
ALICE, BOB, CAROL = (node_secret(11, name) for name in ("alice", "bob", "carol"))
AB = 101 << 40 | 1 << 16  # alice-bob
BC = 102 << 40 | 1 << 16  # bob-carol
PRIVATE = 103 << 40 | 1 << 16  # alice-carol, unannounced


def announcement(secret_a: bytes, secret_b: bytes, scid: int) -> dict:
    """A fully signed channel_announcement between two test nodes."""
    def funding(secret: bytes) -> bytes:
        return child_secret(secret, "funding")
    body = channel_announcement_body(scid, pubkey(secret_a), pubkey(secret_b),
                                     pubkey(funding(secret_a)), pubkey(funding(secret_b)),
                                     CHAIN_HASH)
    for secret in (secret_a, secret_b):
        sigs = announcement_signatures(body, secret, funding(secret))
        body = complete_channel_announcement(body, pubkey(secret), *sigs)
    return body


def direction_of(secret: bytes, other: bytes) -> int:
    """0 if ``secret``'s node is node_id_1 of its channel with ``other``."""
    return 0 if pubkey(secret) < pubkey(other) else 1


def update(secret: bytes, other: bytes, scid: int, timestamp: int = 1_000, **changes) -> dict:
    """A channel_update from ``secret``'s end of its channel with ``other``."""
    args = dict(disabled=False, cltv_expiry_delta=40, htlc_minimum_msat=1_000,
                htlc_maximum_msat=900_000_000, fee_base_msat=1_000,
                fee_proportional_millionths=100)
    args.update(changes)
    return make_channel_update(secret, scid, CHAIN_HASH, timestamp,
                               direction_of(secret, other), **args)


def node_ann(secret: bytes, timestamp: int = 1_000, alias: str = "node") -> dict:
    """A node_announcement from ``secret``."""
    return make_node_announcement(secret, timestamp, alias, b"\x01\x02\x03", ["ipc:///tmp/x"])


@pytest.fixture
def graph() -> Graph:
    """alice - bob - carol, both channels announced with both policies, all nodes named."""
    g = Graph()
    assert g.add_channel(announcement(ALICE, BOB, AB), 1_000_000)
    assert g.add_channel(announcement(BOB, CAROL, BC), 2_000_000)
    for secret, other, scid in ((ALICE, BOB, AB), (BOB, ALICE, AB), (BOB, CAROL, BC),
                                (CAROL, BOB, BC)):
        assert g.apply_update(update(secret, other, scid, fee_base_msat=len(g.edges())))
    for secret, alias in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
        assert g.apply_node_announcement(node_ann(secret, alias=alias))
    return g


# --- channels and updates -------------------------------------------------------------


def test_add_channel_is_new_once(graph):
    assert not graph.add_channel(announcement(ALICE, BOB, AB), 1_000_000)
    with pytest.raises(ConflictingAnnouncement):
        graph.add_channel(announcement(ALICE, CAROL, AB), 1_000_000)
    with pytest.raises(MalformedGossip, match="capacity_sat"):
        graph.add_channel(announcement(ALICE, CAROL, PRIVATE), -1)
    with pytest.raises(MalformedGossip, match="distinct"):
        graph.add_private_channel(PRIVATE, pubkey(ALICE), pubkey(ALICE), 1_000)


def test_newer_update_wins_and_stale_is_rejected(graph):
    first = update(ALICE, BOB, AB, fee_base_msat=0)
    assert not graph.apply_update(first)  # the fixture's update, again
    newer = update(ALICE, BOB, AB, timestamp=2_000, fee_base_msat=5)
    assert graph.apply_update(newer)
    assert graph.channel(AB).policies[direction_of(ALICE, BOB)].fee_base_msat == 5
    assert not graph.apply_update(newer)
    with pytest.raises(StaleUpdate):
        graph.apply_update(update(ALICE, BOB, AB, timestamp=1_500, fee_base_msat=9))
    with pytest.raises(ConflictingUpdate):
        graph.apply_update(update(ALICE, BOB, AB, timestamp=2_000, fee_base_msat=6))
    assert graph.channel(AB).policies[direction_of(ALICE, BOB)].fee_base_msat == 5


def test_update_must_be_signed_by_the_end_it_names(graph):
    forged = make_channel_update(BOB, AB, CHAIN_HASH, 5_000, direction_of(ALICE, BOB), False,
                                 40, 1, 10, 0, 0)
    with pytest.raises(BadUpdateSignature):
        graph.apply_update(forged)


def test_update_for_unknown_or_foreign_channel(graph):
    with pytest.raises(UnknownChannel):
        graph.apply_update(update(ALICE, CAROL, 999 << 40))
    other_chain = make_channel_update(ALICE, AB, b"\x07" * 32, 5_000,
                                      direction_of(ALICE, BOB), False, 40, 1, 10, 0, 0)
    with pytest.raises(MalformedGossip, match="chain_hash"):
        graph.apply_update(other_chain)


def test_disabled_update_shows_in_edges(graph):
    assert graph.apply_update(update(BOB, CAROL, BC, timestamp=3_000, disabled=True))
    disabled = {(e.short_channel_id, e.source) for e in graph.edges() if e.disabled}
    assert disabled == {(BC, pubkey(BOB))}
    edge = next(e for e in graph.edges() if e.disabled)
    assert not edge.can_carry(10_000)


def test_edges_match_policies(graph):
    edges = graph.edges()
    assert len(edges) == 4
    for edge in edges:
        channel = graph.channel(edge.short_channel_id)
        direction = 0 if edge.source == channel.node_1 else 1
        policy = channel.policies[direction]
        assert edge.dest == channel.node_for(1 - direction)
        assert edge.capacity_msat == channel.capacity_sat * 1000
        assert (edge.fee_base_msat, edge.fee_proportional_millionths, edge.cltv_expiry_delta,
                edge.htlc_minimum_msat, edge.htlc_maximum_msat, edge.disabled) == (
            policy.fee_base_msat, policy.fee_proportional_millionths, policy.cltv_expiry_delta,
            policy.htlc_minimum_msat, policy.htlc_maximum_msat, policy.disabled)
    assert {(e.source, e.dest) for e in edges} == {
        (pubkey(ALICE), pubkey(BOB)), (pubkey(BOB), pubkey(ALICE)),
        (pubkey(BOB), pubkey(CAROL)), (pubkey(CAROL), pubkey(BOB)),
    }


def test_edges_only_for_directions_with_a_policy():
    g = Graph()
    g.add_channel(announcement(ALICE, BOB, AB), 50_000)
    assert g.edges() == []
    g.apply_update(update(BOB, ALICE, AB))
    assert [(e.source, e.dest) for e in g.edges()] == [(pubkey(BOB), pubkey(ALICE))]


def test_edge_limits_and_fee():
    edge = Edge(AB, b"s", b"d", capacity_msat=5_000_000, fee_base_msat=1_000,
                fee_proportional_millionths=10, cltv_expiry_delta=40, htlc_minimum_msat=1_000,
                htlc_maximum_msat=9_000_000, disabled=False)
    assert edge.fee_msat(2_000_000) == 1_020
    assert edge.can_carry(1_000) and edge.can_carry(5_000_000)
    assert not edge.can_carry(999) and not edge.can_carry(5_000_001)  # capacity bounds too


def test_remove_channel_forgets_it_and_orphan_nodes(graph):
    assert graph.remove_channel(AB)
    assert not graph.remove_channel(AB)
    assert graph.node(pubkey(ALICE)) is None
    assert graph.node(pubkey(BOB)).alias == "bob"
    assert {e.short_channel_id for e in graph.edges()} == {BC}
    with pytest.raises(UnknownChannel):
        graph.apply_update(update(ALICE, BOB, AB, timestamp=9_000))
    with pytest.raises(UnknownNode):
        graph.apply_node_announcement(node_ann(ALICE, timestamp=9_000))


# --- node announcements -----------------------------------------------------------------


def test_node_announcement_only_for_nodes_with_announced_channels():
    g = Graph()
    with pytest.raises(UnknownNode):
        g.apply_node_announcement(node_ann(ALICE))
    g.add_private_channel(PRIVATE, pubkey(ALICE), pubkey(CAROL), 10_000)
    with pytest.raises(UnknownNode):
        g.apply_node_announcement(node_ann(ALICE))
    assert g.node(pubkey(ALICE)).alias == ""
    g.add_channel(announcement(ALICE, BOB, AB), 10_000)
    assert g.apply_node_announcement(node_ann(ALICE, alias="alice"))
    assert g.node(pubkey(ALICE)).alias == "alice"
    assert g.node(pubkey(CAROL)) is not None and g.node(pubkey(CAROL)).announcement is None
    assert g.node(b"\x02" * 33) is None


def test_node_announcement_newer_wins(graph):
    assert not graph.apply_node_announcement(node_ann(BOB, alias="bob"))
    with pytest.raises(StaleUpdate):
        graph.apply_node_announcement(node_ann(BOB, timestamp=999, alias="old bob"))
    with pytest.raises(ConflictingUpdate):
        graph.apply_node_announcement(node_ann(BOB, alias="other bob"))
    assert graph.apply_node_announcement(node_ann(BOB, timestamp=1_001, alias="new bob"))
    assert graph.node(pubkey(BOB)).alias == "new bob"


# --- private channels -----------------------------------------------------------------


def test_private_channel_routes_but_is_never_flooded_until_announced():
    g = Graph()
    assert g.add_private_channel(PRIVATE, pubkey(CAROL), pubkey(ALICE), 30_000)
    assert not g.add_private_channel(PRIVATE, pubkey(ALICE), pubkey(CAROL), 30_000)
    assert g.apply_update(update(ALICE, CAROL, PRIVATE))
    assert [(e.source, e.capacity_msat) for e in g.edges()] == [(pubkey(ALICE), 30_000_000)]
    assert g.messages_since(0) == []
    with pytest.raises(ConflictingAnnouncement):
        g.add_private_channel(PRIVATE, pubkey(ALICE), pubkey(BOB), 30_000)
    assert g.add_channel(announcement(ALICE, CAROL, PRIVATE), 30_000)
    channel = g.channel(PRIVATE)
    assert not channel.private and len(channel.policies) == 1
    assert [name for name, _ in g.messages_since(0)] == ["channel_announcement", "channel_update"]


# --- re-flooding ------------------------------------------------------------------------


def test_messages_since_orders_and_filters(graph):
    graph.add_channel(announcement(ALICE, CAROL, PRIVATE), 5_000)  # no update: never sent
    graph.apply_update(update(CAROL, BOB, BC, timestamp=2_000))
    graph.apply_node_announcement(node_ann(CAROL, timestamp=2_500, alias="carol2"))
    everything = graph.messages_since(0)
    names = [name for name, _ in everything]
    assert names == ["channel_announcement"] * 2 + ["channel_update"] * 4 + \
        ["node_announcement"] * 3
    recent = graph.messages_since(1_500)
    assert [(name, body.get("short_channel_id")) for name, body in recent] == [
        ("channel_announcement", BC), ("channel_update", BC), ("node_announcement", None)]
    assert recent[1][1]["timestamp"] == 2_000
    assert recent[2][1]["alias"] == "carol2"
    assert [name for name, _ in graph.messages_since(1_000, end_timestamp=2_000)] == \
        ["channel_announcement"] * 2 + ["channel_update"] * 3 + ["node_announcement"] * 2
    assert graph.messages_since(3_000) == []


def test_flooded_messages_rebuild_the_graph(graph):
    copy = Graph()
    for name, body in graph.messages_since(0):
        if name == "channel_announcement":
            copy.add_channel(body, graph.channel(body["short_channel_id"]).capacity_sat)
        elif name == "channel_update":
            assert copy.apply_update(body)
        else:
            assert copy.apply_node_announcement(body)
    assert copy.summary() == graph.summary()


# --- persistence and display ------------------------------------------------------------


def test_wire_round_trip_through_msgpack(graph):
    graph.add_private_channel(PRIVATE, pubkey(ALICE), pubkey(CAROL), 7_000)
    graph.apply_update(update(CAROL, ALICE, PRIVATE, disabled=True))
    packed = msgpack.packb(graph.to_wire(), use_bin_type=True)
    restored = Graph.from_wire(msgpack.unpackb(packed, raw=False))
    assert restored.edges() == graph.edges()
    assert restored.summary() == graph.summary()
    assert restored.messages_since(0) == graph.messages_since(0)
    assert restored.to_wire() == graph.to_wire()


def test_from_wire_refuses_bad_data(graph):
    with pytest.raises(MalformedGossip):
        Graph.from_wire({"version": 99})
    with pytest.raises(MalformedGossip):
        Graph.from_wire({"version": 1, "channels": [{"private": False}], "nodes": []})
    wire = graph.to_wire()
    wire["channels"][0]["updates"][0]["fee_base_msat"] += 1
    with pytest.raises(BadUpdateSignature):
        Graph.from_wire(wire)


def test_summary_lists_nodes_and_policies(graph):
    summary = graph.summary()
    assert sorted(node["alias"] for node in summary["nodes"]) == ["alice", "bob", "carol"]
    bob = next(node for node in summary["nodes"] if node["alias"] == "bob")
    assert bob["channels"] == 2 and bob["node_id"] == pubkey(BOB).hex()
    channel = next(c for c in summary["channels"] if c["short_channel_id"] == "101x1x0")
    assert channel["capacity_sat"] == 1_000_000 and not channel["private"]
    assert channel["policy_1"]["cltv_expiry_delta"] == 40
    assert channel["policy_2"]["timestamp"] == 1_000
    assert msgpack.packb(summary)  # plain data


# --- route hints ------------------------------------------------------------------------


def test_route_hint_edges():
    x, y, payee = pubkey(ALICE), pubkey(BOB), pubkey(CAROL)
    hints = [
        [RouteHintHop(x, AB, 10, 200, 30), RouteHintHop(y, BC, 20, 300, 40)],
        [RouteHintHop(x, PRIVATE, 1, 2, 3)],
    ]
    edges = edges_from_route_hints(hints, payee)
    assert [(e.short_channel_id, e.source, e.dest) for e in edges] == [
        (AB, x, y), (BC, y, payee), (PRIVATE, x, payee)]
    first = edges[0]
    assert (first.fee_base_msat, first.fee_proportional_millionths,
            first.cltv_expiry_delta) == (10, 200, 30)
    assert first.capacity_msat == UNKNOWN_CAPACITY_MSAT and not first.disabled
    assert first.can_carry(10**15)
    assert edges_from_route_hints([], payee) == []
