"""One peer's view of the network: channels, their per-direction policies, and nodes.

Pure logic, no I/O. The graph holds the signed gossip it accepted, so that it can
re-flood it (:meth:`Graph.messages_since`) and persist it (:meth:`Graph.to_wire`).
Checking a channel_announcement's signatures and its funding output is the caller's job
(it needs the chain); channel_updates and node_announcements are verified here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from emulator.crypto.bolt11 import RouteHintHop
from peers import gossip
from peers.gossip import (
    ConflictingAnnouncement,
    ConflictingUpdate,
    MalformedGossip,
    StaleUpdate,
    UnknownChannel,
    UnknownNode,
)

WIRE_VERSION = 1
UNKNOWN_CAPACITY_MSAT = 2**63  # a route hint does not say how big its channel is


@dataclass
class ChannelPolicy:
    """What one end of a channel asks for forwarding over it (from its channel_update)."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    disabled: bool
    timestamp: int

    @classmethod
    def from_update(cls, body: dict[str, Any]) -> ChannelPolicy:
        """The policy a (checked) channel_update body announces."""
        return cls(
            fee_base_msat=body["fee_base_msat"],
            fee_proportional_millionths=body["fee_proportional_millionths"],
            cltv_expiry_delta=body["cltv_expiry_delta"],
            htlc_minimum_msat=body["htlc_minimum_msat"],
            htlc_maximum_msat=body["htlc_maximum_msat"],
            disabled=gossip.update_disabled(body),
            timestamp=body["timestamp"],
        )


@dataclass
class GraphChannel:
    """A channel between node_1 < node_2; policies and updates are keyed by direction."""

    short_channel_id: int
    node_1: bytes
    node_2: bytes
    capacity_sat: int
    policies: dict[int, ChannelPolicy] = field(default_factory=dict)
    announcement: dict[str, Any] | None = None  # the signed body, for re-flooding
    private: bool = False
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # latest signed, per direction

    def node_for(self, direction: int) -> bytes:
        """The node whose channel_update carries ``direction`` (0: node_1, 1: node_2)."""
        return self.node_2 if direction else self.node_1


@dataclass
class GraphNode:
    """A node with at least one channel, and what its node_announcement says, if any."""

    node_id: bytes
    alias: str = ""
    rgb_color: bytes = b"\x00\x00\x00"
    addresses: list[str] = field(default_factory=list)
    timestamp: int = 0
    announcement: dict[str, Any] | None = None  # the signed body, for re-flooding


@dataclass(frozen=True)
class Edge:
    """One usable direction of a channel, as pathfinding sees it."""

    short_channel_id: int
    source: bytes
    dest: bytes
    capacity_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    disabled: bool

    def fee_msat(self, amount_msat: int) -> int:
        """The fee ``source`` charges to forward ``amount_msat`` over this edge."""
        return gossip.fee_msat(self.fee_base_msat, self.fee_proportional_millionths, amount_msat)

    def can_carry(self, amount_msat: int) -> bool:
        """True if enabled and htlc_minimum_msat <= amount <= min(htlc_maximum, capacity)."""
        limit_msat = min(self.htlc_maximum_msat, self.capacity_msat)
        return not self.disabled and self.htlc_minimum_msat <= amount_msat <= limit_msat


def _check_capacity(capacity_sat: int) -> None:
    if type(capacity_sat) is not int or capacity_sat < 0:
        raise MalformedGossip(f"capacity_sat must be a non-negative int, got {capacity_sat!r}")


def _ordered(node_a: bytes, node_b: bytes) -> tuple[bytes, bytes]:
    if node_a == node_b:
        raise MalformedGossip("a channel needs two distinct node ids")
    return (node_a, node_b) if node_a < node_b else (node_b, node_a)


def _check_newer(held: dict[str, Any], body: dict[str, Any], type_name: str) -> bool:
    """False if ``body`` repeats what is held; raise StaleUpdate if it is not newer."""
    if gossip.unsigned_fields(type_name, held) == gossip.unsigned_fields(type_name, body):
        return False
    if body["timestamp"] < held["timestamp"]:
        raise StaleUpdate(f"{type_name}: timestamp {body['timestamp']} is older than "
                          f"{held['timestamp']}")
    if body["timestamp"] == held["timestamp"]:
        raise ConflictingUpdate(f"{type_name}: different content at the same timestamp "
                                f"{body['timestamp']}")
    return True


class Graph:
    """The channels and nodes one peer knows about, built from gossip and its own channels."""

    def __init__(self) -> None:
        self._channels: dict[int, GraphChannel] = {}
        self._node_channels: dict[bytes, set[int]] = {}
        self._nodes: dict[bytes, GraphNode] = {}  # nodes whose node_announcement we hold

    # --- changes ------------------------------------------------------------------------

    def _insert(self, channel: GraphChannel) -> None:
        self._channels[channel.short_channel_id] = channel
        for node_id in (channel.node_1, channel.node_2):
            self._node_channels.setdefault(node_id, set()).add(channel.short_channel_id)

    def add_channel(self, announcement_body: dict[str, Any], capacity_sat: int) -> bool:
        """Add an announced channel (already verified, funding output checked); True if new."""
        gossip.check_fields("channel_announcement", announcement_body)
        _check_capacity(capacity_sat)
        scid = announcement_body["short_channel_id"]
        node_1, node_2 = announcement_body["node_id_1"], announcement_body["node_id_2"]
        if not node_1 < node_2:
            raise MalformedGossip("channel_announcement: node_id_1 must be less than node_id_2")
        held = self._channels.get(scid)
        if held is not None and (held.node_1, held.node_2) != (node_1, node_2):
            raise ConflictingAnnouncement(
                f"{gossip.format_short_channel_id(scid)} is already a channel of other nodes"
            )
        if held is not None and not held.private:
            return False
        channel = GraphChannel(scid, node_1, node_2, capacity_sat,
                               announcement=dict(announcement_body))
        if held is not None:  # our own channel, now announced: keep what its ends told us
            channel.policies, channel.updates = held.policies, held.updates
        self._insert(channel)
        return True

    def add_private_channel(
        self, short_channel_id: int, node_a: bytes, node_b: bytes, capacity_sat: int
    ) -> bool:
        """Add an unannounced channel (our own); True if new. It is never re-flooded."""
        node_1, node_2 = _ordered(node_a, node_b)
        _check_capacity(capacity_sat)
        held = self._channels.get(short_channel_id)
        if held is not None:
            if (held.node_1, held.node_2) != (node_1, node_2):
                raise ConflictingAnnouncement(
                    f"{gossip.format_short_channel_id(short_channel_id)} has other nodes"
                )
            return False
        self._insert(GraphChannel(short_channel_id, node_1, node_2, capacity_sat, private=True))
        return True

    def apply_update(self, body: dict[str, Any]) -> bool:
        """Verify and apply a channel_update; True if it changed the graph, False if a repeat.

        Raises UnknownChannel (the caller may hold the update until the announcement
        arrives), StaleUpdate for an older one, or a signature/field error.
        """
        gossip.check_fields("channel_update", body)
        scid = body["short_channel_id"]
        channel = self._channels.get(scid)
        if channel is None:
            raise UnknownChannel(f"no channel {gossip.format_short_channel_id(scid)}")
        announcement = channel.announcement
        if announcement is not None and body["chain_hash"] != announcement["chain_hash"]:
            raise MalformedGossip("channel_update: chain_hash differs from the channel's")
        direction = gossip.update_direction(body)
        held = channel.updates.get(direction)
        if held == body:
            return False  # the same signed message again: flooding delivers many copies
        gossip.verify_channel_update(body, channel.node_for(direction))
        if held is not None and not _check_newer(held, body, "channel_update"):
            return False
        channel.updates[direction] = dict(body)
        channel.policies[direction] = ChannelPolicy.from_update(body)
        return True

    def _has_public_channel(self, node_id: bytes) -> bool:
        scids = self._node_channels.get(node_id, ())
        return any(not self._channels[scid].private for scid in scids)

    def apply_node_announcement(self, body: dict[str, Any]) -> bool:
        """Verify and apply a node_announcement; True if it changed the graph.

        BOLT 7: only for nodes known from a channel_announcement (else UnknownNode);
        a newer timestamp wins (else StaleUpdate, or False for a repeat).
        """
        gossip.check_fields("node_announcement", body)
        node_id = body["node_id"]
        if not self._has_public_channel(node_id):
            raise UnknownNode(f"node {node_id.hex()} has no announced channel")
        held = self._nodes.get(node_id)
        if held is not None and held.announcement == body:
            return False
        gossip.verify_node_announcement(body)
        if held is not None and not _check_newer(held.announcement, body, "node_announcement"):
            return False
        self._nodes[node_id] = GraphNode(
            node_id, body["alias"], body["rgb_color"], list(body["addresses"]),
            body["timestamp"], dict(body),
        )
        return True

    def remove_channel(self, short_channel_id: int) -> bool:
        """Forget a channel (closed on chain) and announcements of nodes left without one."""
        channel = self._channels.pop(short_channel_id, None)
        if channel is None:
            return False
        for node_id in (channel.node_1, channel.node_2):
            scids = self._node_channels[node_id]
            scids.discard(short_channel_id)
            if not scids:
                del self._node_channels[node_id]
            if not self._has_public_channel(node_id):
                self._nodes.pop(node_id, None)
        return True

    # --- queries ------------------------------------------------------------------------

    def channel(self, short_channel_id: int) -> GraphChannel | None:
        """The channel with this short_channel_id, or None."""
        return self._channels.get(short_channel_id)

    def channels(self) -> list[GraphChannel]:
        """Every channel, by short_channel_id."""
        return [self._channels[scid] for scid in sorted(self._channels)]

    def channels_of(self, node_id: bytes) -> list[GraphChannel]:
        """The channels of ``node_id``, by short_channel_id."""
        return [self._channels[scid] for scid in sorted(self._node_channels.get(node_id, ()))]

    def node(self, node_id: bytes) -> GraphNode | None:
        """What we know of a node with a channel (alias empty if it never announced)."""
        if node_id not in self._node_channels:
            return None
        return self._nodes.get(node_id) or GraphNode(node_id)

    def nodes(self) -> list[GraphNode]:
        """Every node with at least one channel, by node id."""
        return [self._nodes.get(node_id) or GraphNode(node_id)
                for node_id in sorted(self._node_channels)]

    def edges(self) -> list[Edge]:
        """One Edge per channel direction that has a policy."""
        edges = []
        for channel in self.channels():
            for direction, policy in sorted(channel.policies.items()):
                source = channel.node_for(direction)
                dest = channel.node_for(1 - direction)
                edges.append(Edge(
                    channel.short_channel_id, source, dest, channel.capacity_sat * 1000,
                    policy.fee_base_msat, policy.fee_proportional_millionths,
                    policy.cltv_expiry_delta, policy.htlc_minimum_msat,
                    policy.htlc_maximum_msat, policy.disabled,
                ))
        return edges

    def messages_since(
        self, timestamp: int, end_timestamp: int | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Gossip for a gossip_timestamp_filter: timestamp <= ts < end_timestamp (if given).

        Announcements come first. BOLT 7: a channel_announcement takes the timestamp of its
        updates and is not sent without one; private channels and dont_forward updates
        are never sent.
        """
        def wanted(ts: int) -> bool:
            return ts >= timestamp and (end_timestamp is None or ts < end_timestamp)

        announcements, updates = [], []
        for channel in self.channels():
            if channel.private or channel.announcement is None:
                continue
            fresh = [body for _, body in sorted(channel.updates.items())
                     if wanted(body["timestamp"]) and not gossip.update_dont_forward(body)]
            if fresh:
                announcements.append(("channel_announcement", channel.announcement))
                updates.extend(("channel_update", body) for body in fresh)
        nodes = [("node_announcement", self._nodes[node_id].announcement)
                 for node_id in sorted(self._nodes)
                 if wanted(self._nodes[node_id].timestamp)]
        return announcements + updates + nodes

    # --- persistence and display ----------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The graph as a plain msgpack-able map (signed messages kept as they came)."""
        channels = [{
            "short_channel_id": channel.short_channel_id,
            "node_1": channel.node_1, "node_2": channel.node_2,
            "capacity_sat": channel.capacity_sat, "private": channel.private,
            "announcement": channel.announcement,
            "updates": [body for _, body in sorted(channel.updates.items())],
        } for channel in self.channels()]
        nodes = [self._nodes[node_id].announcement for node_id in sorted(self._nodes)]
        return {"version": WIRE_VERSION, "channels": channels, "nodes": nodes}

    @classmethod
    def from_wire(cls, obj: Any) -> Graph:
        """Rebuild a graph from :meth:`to_wire`; updates and node announcements are re-verified."""
        if not isinstance(obj, dict) or obj.get("version") != WIRE_VERSION:
            raise MalformedGossip(f"graph: expected a version {WIRE_VERSION} map")
        graph = cls()
        try:
            for item in obj["channels"]:
                graph._restore_channel(item)
            for body in obj["nodes"]:
                graph.apply_node_announcement(body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedGossip(f"graph: malformed stored data: {exc!r}") from None
        return graph

    def _restore_channel(self, item: dict[str, Any]) -> None:
        if item["private"]:
            self.add_private_channel(item["short_channel_id"], item["node_1"], item["node_2"],
                                     item["capacity_sat"])
        else:
            self.add_channel(item["announcement"], item["capacity_sat"])
        for body in item["updates"]:
            self.apply_update(body)

    def counts(self) -> dict[str, int]:
        """How much of the network we know: nodes, public channels, and public channels
        with both directions' policies (routable both ways)."""
        public = [c for c in self._channels.values() if not c.private]
        return {"nodes": len(self._node_channels), "channels": len(public),
                "complete_channels": sum(1 for c in public if len(c.policies) == 2)}

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view for ``listgraph``: nodes with aliases, channels with policies."""
        nodes = [{
            "node_id": node.node_id.hex(), "alias": node.alias,
            "rgb_color": node.rgb_color.hex(), "addresses": list(node.addresses),
            "timestamp": node.timestamp, "channels": len(self._node_channels[node.node_id]),
        } for node in self.nodes()]
        channels = [{
            "short_channel_id": gossip.format_short_channel_id(channel.short_channel_id),
            "node_1": channel.node_1.hex(), "node_2": channel.node_2.hex(),
            "capacity_sat": channel.capacity_sat, "private": channel.private,
            "policy_1": _policy_summary(channel.policies.get(0)),
            "policy_2": _policy_summary(channel.policies.get(1)),
        } for channel in self.channels()]
        return {"nodes": nodes, "channels": channels}


def _policy_summary(policy: ChannelPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else asdict(policy)


def edges_from_route_hints(
    route_hints: Iterable[Iterable[RouteHintHop]], payee: bytes
) -> list[Edge]:
    """Edges for BOLT 11 route hints: each hop runs from its pubkey to the next, the last to ``payee``."""
    edges = []
    for route in route_hints:
        hops = list(route)
        next_nodes = [hop.pubkey for hop in hops[1:]] + [payee]
        for hop, dest in zip(hops, next_nodes, strict=True):
            edges.append(Edge(
                hop.short_channel_id, hop.pubkey, dest, UNKNOWN_CAPACITY_MSAT,
                hop.fee_base_msat, hop.fee_proportional_millionths, hop.cltv_expiry_delta,
                htlc_minimum_msat=0, htlc_maximum_msat=UNKNOWN_CAPACITY_MSAT, disabled=False,
            ))
    return edges
