"""Gossip in the peer process (BOLT 7): announce our channels, flood what we learn.

Once a public channel is open, both ends exchange ``announcement_signatures`` and
build the same ``channel_announcement``; each end then floods it with its
``channel_update`` and ``node_announcement``. A received announcement is verified
and checked against the funding output on the chain before it enters our graph;
updates follow the newer-wins rule. Flooding is batched (a flush every
``gossip_flush`` seconds), and a peer that (re)connects asks for everything newer
than what it has (``gossip_timestamp_filter``). Private channels stay out of the
flood; their updates go to the channel's peer only, for invoice route hints.

Received gossip is checked by one worker task, in arrival order, off the link's read
path: a peer busy checking thousands of announcements against the chain still
answers pings and channel messages at once.
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
PERSIST_SECONDS = 5.0  # the graph is written at most this often (gossip re-syncs the rest)
MAX_PENDING = 1000
MAX_INBOX = 50_000  # received gossip not checked yet; beyond this it is dropped (re-synced)
RGB = b"\x33\x99\xff"


class GossipSync:
    """The node's graph and its gossip traffic."""

    def __init__(self, node: Any) -> None:
        self.node = node
        stored = node.store.value("graph")
        self.graph = Graph.from_wire(stored) if stored else Graph()
        self.outpoints: dict[int, list] = dict(node.store.value("graph_outpoints", {}))
        # what to flood at the next flush, each with the peers that sent it to us (they
        # have it: a copy arriving from another neighbour before the flush adds it)
        self.queue: list[tuple[str, dict[str, Any], set[bytes]]] = []
        self._queued: dict[tuple, set[bytes]] = {}
        self.pending: list[dict[str, Any]] = []  # updates for channels not announced yet
        self.last_timestamp = 0
        self._dirty = False
        self._persisted_at = 0.0
        self._wanted = asyncio.Event()  # something to flood or to persist
        self._persist_timer: asyncio.TimerHandle | None = None
        self._node_announced = False
        self.held_nodes: dict[bytes, dict[str, Any]] = {}  # node_announcements before a channel
        self.early: dict[bytes, dict[str, Any]] = {}  # announcement_signatures before OPEN
        self.inbox: asyncio.Queue[tuple[bytes, str, dict[str, Any]]] = asyncio.Queue()
        self.dropped = 0
        self._blocks: dict[int, list[bytes]] = {}  # txids by height, until the next block
        self._fundings: dict[int, tuple] = {}  # scid -> (txid, coin), for one batch

    def _timestamp(self) -> int:
        self.last_timestamp = max(self.last_timestamp + 1, int(time.time()))
        return self.last_timestamp

    async def run(self) -> None:
        """Flush queued gossip in batches (what comes within FLUSH_SECONDS of the first
        message goes out together); idle, it sleeps until there is something to send."""
        while True:
            await self._wanted.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            self._wanted.clear()
            await self.flush()
            if self._dirty and self._persist_timer is None:  # written once it is due
                due = self._persisted_at + PERSIST_SECONDS - time.monotonic()
                self._persist_timer = asyncio.get_running_loop().call_later(
                    max(0.0, due), self._persist_due)

    def _persist_due(self) -> None:
        self._persist_timer = None
        self._wanted.set()

    def _changed(self) -> None:
        """The graph changed: persist it within PERSIST_SECONDS."""
        self._dirty = True
        self._wanted.set()

    async def check_received(self) -> None:
        """The worker: check and apply received gossip, one message at a time."""
        while True:
            batch = [await self.inbox.get()]
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            await self._look_up_fundings(batch)
            for peer_id, type_name, body in batch:
                try:
                    await self.on_message(peer_id, type_name, body)
                except Exception as exc:  # e.g. the chain did not answer: drop this one
                    self.node.log.warning("gossip %s from %s not checked: %r", type_name,
                                          peer_id.hex()[:16], exc)
                    self.node.events.emit("gossip_refused", peer=peer_id, type=type_name,
                                          code=getattr(exc, "code", "error"))
            self._fundings.clear()

    async def _look_up_fundings(self, batch: list[tuple[bytes, str, dict[str, Any]]]) -> None:
        """Ask the chain for the funding outputs of a batch's new announcements all at
        once (one round trip's wait instead of one per announcement)."""
        scids = {body["short_channel_id"] for _, type_name, body in batch
                 if type_name == "channel_announcement" and isinstance(body, dict)
                 and isinstance(body.get("short_channel_id"), int)
                 and self.graph.channel(body["short_channel_id"]) is None}
        if scids:
            await asyncio.gather(*(self._funding_coin(scid) for scid in scids))

    def receive(self, peer_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        """A gossip message from a peer: queued for the worker (never blocks the link)."""
        if self.inbox.qsize() >= MAX_INBOX:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                self.node.log.warning("gossip inbox full: %d messages dropped so far",
                                      self.dropped)
            return
        self.inbox.put_nowait((peer_id, type_name, body))

    async def flush(self) -> None:
        batch, self.queue = self.queue, []
        self._queued = {}
        for peer_id, link in list(self.node.links.links.items()):
            if not link.connected:
                continue
            for type_name, body, senders in batch:
                if peer_id not in senders:
                    await self._send(peer_id, type_name, body)
        if self._dirty and time.monotonic() - self._persisted_at >= PERSIST_SECONDS:
            self.persist()

    def close(self) -> None:
        """Stopping: write the graph if it changed since the last write."""
        if self._dirty:
            self.persist()

    def persist(self) -> None:
        """Write the graph (what changed since is gossiped to us again after a restart)."""
        self._dirty = False
        self._persisted_at = time.monotonic()
        self.node.store.set_value("graph", self.graph.to_wire())
        self.node.store.set_value("graph_outpoints", self.outpoints)

    async def _send(self, peer_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        try:
            await self.node.links.send(peer_id, type_name, body)
        except LnemuError:
            pass

    def _flood(self, type_name: str, body: dict[str, Any], origin: bytes | None) -> None:
        senders = {origin} if origin else set()
        self._queued[_flood_key(type_name, body)] = senders
        self.queue.append((type_name, body, senders))
        self._changed()

    def _also_from(self, type_name: str, body: dict[str, Any], peer_id: bytes) -> None:
        """Another copy of a message we are about to flood: its sender has it already."""
        senders = self._queued.get(_flood_key(type_name, body))
        if senders is not None:
            senders.add(peer_id)

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
        self._changed()
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
        if not self._node_announced:  # it does not change with each new channel
            self._node_announced = True
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
        except gossip.StaleUpdate as exc:  # old news: flooding delivers many copies
            self.node.log.debug("gossip %s from %s: %s", type_name, peer_id.hex()[:16], exc)
        except gossip.GossipError as exc:
            self.node.log.info("gossip %s from %s refused: %s", type_name,
                               peer_id.hex()[:16], exc)
            self.node.events.emit("gossip_refused", peer=peer_id, type=type_name,
                                  code=exc.code)

    async def _on_channel_announcement(self, peer_id: bytes, body: dict[str, Any]) -> None:
        scid = body["short_channel_id"]
        if self.graph.channel(scid) is not None and not self.graph.channel(scid).private:
            self._also_from("channel_announcement", body, peer_id)
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
        found = self._fundings.get(scid) or await self._funding_coin(scid)
        want = cm.funding_policy(body["bitcoin_key_1"], body["bitcoin_key_2"])
        if found[1] is None or found[1]["cond"] != want:
            raise gossip.MalformedGossip(f"{gossip.format_short_channel_id(scid)}: no unspent "
                                         "2-of-2 funding output on the chain")
        return found[1]["amount_sat"], [found[0], scid & 0xFFFF]

    async def _funding_coin(self, scid: int) -> tuple[bytes | None, dict[str, Any] | None]:
        """(txid, unspent coin) at ``scid`` on the chain, or (None, None); remembered
        for the batch being checked."""
        height, index, vout = scid >> 40, (scid >> 16) & 0xFFFFFF, scid & 0xFFFF
        try:
            txids = self._blocks.get(height)
            if txids is None:  # every announcement of a block asks for the same one
                txids = (await self.node.chain.call("getblock", height=height))["txids"]
                self._blocks[height] = txids
            txid = txids[index]
            found = txid, await self.node.chain.call("getutxo", txid=txid, vout=vout)
        except (RpcError, IndexError):
            found = None, None
        self._fundings[scid] = found
        return found

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
            self._changed()
        else:
            self._also_from("channel_update", body, peer_id)

    async def _retry_pending(self, scid: int) -> None:
        held = [b for b in self.pending if b["short_channel_id"] == scid]
        self.pending = [b for b in self.pending if b["short_channel_id"] != scid]
        for body in held:
            await self.on_message(b"", "channel_update", body)
        channel = self.graph.channel(scid)
        for node_id in (channel.node_1, channel.node_2) if channel else ():
            if node_id in self.held_nodes:
                await self.on_message(b"", "node_announcement", self.held_nodes.pop(node_id))

    async def _on_node_announcement(self, peer_id: bytes, body: dict[str, Any]) -> None:
        try:
            changed = self.graph.apply_node_announcement(body)
        except gossip.UnknownNode:  # it overtook its node's first channel: hold it
            if len(self.held_nodes) < MAX_PENDING:
                self.held_nodes[body["node_id"]] = body
            return
        if changed:
            self._flood("node_announcement", body, peer_id)
        else:
            self._also_from("node_announcement", body, peer_id)

    async def _on_gossip_timestamp_filter(self, peer_id: bytes, body: dict[str, Any]) -> None:
        for type_name, message in self.graph.messages_since(body["first_timestamp"]):
            await self._send(peer_id, type_name, message)

    async def on_connected(self, peer_id: bytes) -> None:
        """Ask a (re)connected peer for all the gossip it has (a full sync)."""
        await self._send(peer_id, "gossip_timestamp_filter", {
            "chain_hash": CHAIN_HASH, "first_timestamp": 0, "timestamp_range": 0xFFFFFFFF})

    def on_block(self, txs: list[Tx]) -> None:
        """Forget channels whose funding output was spent."""
        self._blocks.clear()  # a reorg may have changed a block we looked at
        spent = {(i.txid, i.vout) for tx in txs for i in tx.inputs}
        for scid, (txid, vout) in list(self.outpoints.items()):
            if (txid, vout) in spent:
                self.graph.remove_channel(scid)
                del self.outpoints[scid]
                self._changed()


def _flood_key(type_name: str, body: dict[str, Any]) -> tuple:
    """What identifies one gossip message among the copies flooding delivers."""
    if type_name == "channel_announcement":
        return type_name, body["short_channel_id"]
    if type_name == "channel_update":
        return (type_name, body["short_channel_id"], gossip.update_direction(body),
                body["timestamp"])
    return type_name, body["node_id"], body["timestamp"]
