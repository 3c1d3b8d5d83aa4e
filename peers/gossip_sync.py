"""Gossip in the peer process (BOLT 7): announce our channels, flood what we learn.

Once a public channel is open, both ends exchange ``announcement_signatures`` and
build the same ``channel_announcement``; each end then floods it with its
``channel_update`` and ``node_announcement``. A received announcement is verified
and checked against the funding output on the chain before it enters our graph;
updates follow the newer-wins rule. Flooding is batched (a flush every
``gossip_flush`` seconds), and a peer that (re)connects asks for everything newer
than what it has (``gossip_timestamp_filter``). Private channels stay out of the
flood; their updates go to the channel's peer only, for invoice route hints.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from emulator.errors import LnemuError
from emulator.rpc import RpcError
from emulator.tx import Tx
from peers import commitment as cm
from peers import gossip
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.graph import Graph
from peers.opening import CHAIN_HASH

FLUSH_SECONDS = 0.1
MAX_PENDING = 1000
RGB = b"\x33\x99\xff"


class GossipSync:
    """The node's graph and its gossip traffic."""

    def __init__(self, node: Any) -> None:
        self.node = node
        stored = node.store.value("graph")
        self.graph = Graph.from_wire(stored) if stored else Graph()
        self.outpoints: dict[int, list] = dict(node.store.value("graph_outpoints", {}))
        self.queue: list[tuple[str, dict[str, Any], bytes | None]] = []
        self.pending: list[dict[str, Any]] = []  # updates for channels not announced yet
        self.last_timestamp = 0
        self._dirty = False
        self.early: dict[bytes, dict[str, Any]] = {}  # announcement_signatures before OPEN

    def _timestamp(self) -> int:
        self.last_timestamp = max(self.last_timestamp + 1, int(time.time()))
        return self.last_timestamp

    async def run(self) -> None:
        """Flush queued gossip in batches; persist the graph when it changed."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        batch, self.queue = self.queue, []
        for peer_id, link in list(self.node.links.links.items()):
            if not link.connected:
                continue
            for type_name, body, origin in batch:
                if origin != peer_id:
                    await self._send(peer_id, type_name, body)
        if self._dirty:
            self._dirty = False
            self.node.store.set_value("graph", self.graph.to_wire())
            self.node.store.set_value("graph_outpoints", self.outpoints)

    async def _send(self, peer_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        try:
            await self.node.links.send(peer_id, type_name, body)
        except LnemuError:
            pass

    def _flood(self, type_name: str, body: dict[str, Any], origin: bytes | None) -> None:
        self.queue.append((type_name, body, origin))
        self._dirty = True

    # --- our own channels --------------------------------------------------------
    def our_update(self, ch: Channel, disabled: bool = False) -> dict[str, Any]:
        base, prop, delta = self.node.forwarder.policy
        direction = 0 if self.node.node_id < ch.peer_id else 1
        return gossip.make_channel_update(
            self.node.node_secret, ch.short_channel_id, CHAIN_HASH, self._timestamp(),
            direction, disabled, delta, ch.remote.htlc_minimum_msat,
            ch.funding_sat * 1000, base, prop)

    async def channel_opened(self, ch: Channel) -> None:
        """Put our new channel in our graph; announce it (public) or tell our peer (private)."""
        self.graph.add_private_channel(ch.short_channel_id, self.node.node_id, ch.peer_id,
                                       ch.funding_sat)
        self.outpoints[ch.short_channel_id] = [ch.funding_outpoint.txid,
                                               ch.funding_outpoint.vout]
        update = self.our_update(ch)
        self.graph.apply_update(update)
        self._dirty = True
        await self._retry_pending(ch.short_channel_id)  # the peer's update may be here already
        if ch.announce:
            await self._send_announcement_signatures(ch)
            if ch.cid in self.early:
                await self.on_announcement_signatures(ch, self.early.pop(ch.cid))
        else:
            await self._send(ch.peer_id, "channel_update", update)

    def _announcement(self, ch: Channel) -> dict[str, Any]:
        return gossip.channel_announcement_body(
            ch.short_channel_id, self.node.node_id, ch.peer_id,
            ch.local.basepoints.funding_pubkey, ch.remote.basepoints.funding_pubkey,
            CHAIN_HASH)

    async def _send_announcement_signatures(self, ch: Channel) -> None:
        node_sig, bitcoin_sig = gossip.announcement_signatures(
            self._announcement(ch), self.node.node_secret, ch.secrets.funding_privkey)
        await self._send(ch.peer_id, "announcement_signatures", {
            "channel_id": ch.cid, "short_channel_id": ch.short_channel_id,
            "node_signature": node_sig, "bitcoin_signature": bitcoin_sig})

    async def on_announcement_signatures(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state != ChannelState.OPEN:
            self.early[ch.cid] = body  # the peer saw the channel open before we did
            return
        if body["short_channel_id"] != ch.short_channel_id:
            raise gossip.MalformedGossip("announcement_signatures for another short channel id")
        ours = gossip.announcement_signatures(self._announcement(ch), self.node.node_secret,
                                              ch.secrets.funding_privkey)
        full = gossip.complete_channel_announcement(self._announcement(ch), self.node.node_id,
                                                    *ours)
        full = gossip.complete_channel_announcement(full, ch.peer_id, body["node_signature"],
                                                    body["bitcoin_signature"])
        gossip.verify_channel_announcement(full)
        if self.graph.add_channel(full, ch.funding_sat):
            await self._retry_pending(ch.short_channel_id)
        # flood ours even if the peer's flood announced the channel to us first
        self._flood("channel_announcement", full, None)
        update = self.our_update(ch)
        self.graph.apply_update(update)
        self._flood("channel_update", update, None)
        self._flood("node_announcement", self._node_announcement(), None)

    def _node_announcement(self) -> dict[str, Any]:
        body = gossip.make_node_announcement(self.node.node_secret, self._timestamp(),
                                             self.node.config.alias[:32], RGB,
                                             [self.node.config.p2p])
        self.graph.apply_node_announcement(body)
        return body

    async def channel_closed(self, ch: Channel) -> None:
        """Our channel is going on chain: tell the network it is disabled."""
        if ch.short_channel_id is None or self.graph.channel(ch.short_channel_id) is None:
            return
        update = self.our_update(ch, disabled=True)
        try:
            self.graph.apply_update(update)
        except gossip.GossipError:
            return
        if ch.announce:
            self._flood("channel_update", update, None)

    # --- what others tell us ----------------------------------------------------------
    async def on_message(self, peer_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        try:
            await getattr(self, f"_on_{type_name}")(peer_id, body)
        except gossip.GossipError as exc:
            self.node.log.info("gossip %s from %s refused: %s", type_name,
                               peer_id.hex()[:16], exc)
            self.node.events.emit("gossip_refused", peer=peer_id, type=type_name,
                                  code=exc.code)

    async def _on_channel_announcement(self, peer_id: bytes, body: dict[str, Any]) -> None:
        scid = body["short_channel_id"]
        if self.graph.channel(scid) is not None and not self.graph.channel(scid).private:
            return
        gossip.verify_channel_announcement(body)
        capacity, outpoint = await self._funding_output(body)
        if self.graph.add_channel(body, capacity):
            self.outpoints[scid] = outpoint
            self._flood("channel_announcement", body, peer_id)
            self.node.events.emit("gossip_channel", short_channel_id=scid)
            await self._retry_pending(scid)

    async def _funding_output(self, body: dict[str, Any]) -> tuple[int, list]:
        """The announced channel's funding output must exist, unspent, with the 2-of-2."""
        scid = body["short_channel_id"]
        height, index, vout = scid >> 40, (scid >> 16) & 0xFFFFFF, scid & 0xFFFF
        try:
            block = await self.node.chain.call("getblock", height=height)
            txid = block["txids"][index]
            coin = await self.node.chain.call("getutxo", txid=txid, vout=vout)
        except (RpcError, IndexError):
            coin = None
        want = cm.funding_policy(body["bitcoin_key_1"], body["bitcoin_key_2"])
        if coin is None or coin["cond"] != want:
            raise gossip.MalformedGossip(f"{gossip.format_short_channel_id(scid)}: no unspent "
                                         "2-of-2 funding output on the chain")
        return coin["amount_sat"], [txid, vout]

    async def _on_channel_update(self, peer_id: bytes, body: dict[str, Any]) -> None:
        try:
            changed = self.graph.apply_update(body)
        except gossip.UnknownChannel:
            if len(self.pending) < MAX_PENDING:
                self.pending.append(body)
            return
        if changed:
            channel = self.graph.channel(body["short_channel_id"])
            if not channel.private:
                self._flood("channel_update", body, peer_id)
            self._dirty = True

    async def _retry_pending(self, scid: int) -> None:
        held = [b for b in self.pending if b["short_channel_id"] == scid]
        self.pending = [b for b in self.pending if b["short_channel_id"] != scid]
        for body in held:
            await self.on_message(b"", "channel_update", body)

    async def _on_node_announcement(self, peer_id: bytes, body: dict[str, Any]) -> None:
        if self.graph.apply_node_announcement(body):
            self._flood("node_announcement", body, peer_id)

    async def _on_gossip_timestamp_filter(self, peer_id: bytes, body: dict[str, Any]) -> None:
        for type_name, message in self.graph.messages_since(body["first_timestamp"]):
            await self._send(peer_id, type_name, message)

    async def on_connected(self, peer_id: bytes) -> None:
        """Ask a (re)connected peer for all the gossip it has (a full sync)."""
        await self._send(peer_id, "gossip_timestamp_filter", {
            "chain_hash": CHAIN_HASH, "first_timestamp": 0, "timestamp_range": 0xFFFFFFFF})

    def on_block(self, txs: list[Tx]) -> None:
        """Forget channels whose funding output was spent."""
        spent = {(i.txid, i.vout) for tx in txs for i in tx.inputs}
        for scid, (txid, vout) in list(self.outpoints.items()):
            if (txid, vout) in spent:
                self.graph.remove_channel(scid)
                del self.outpoints[scid]
                self._dirty = True
