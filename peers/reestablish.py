"""Reconnection (BOLT 2 ``channel_reestablish``): pick every channel up where it was.

On every new session each side forgets the updates no ``commitment_signed`` covered,
then tells the other which commitment and which revocation it expects next. Each
side retransmits what the other missed — the last ``revoke_and_ack``, the last
``commitment_signed`` with the updates it covered, in the order they were first
sent — and resumes. A peer that proves it has a newer state than ours means we
lost data: we must not broadcast our (old) commitment, and wait for it to close.
"""
from __future__ import annotations

import asyncio
from typing import Any

from emulator.crypto import shachain
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_types import Side, UpdateKind

LIVE = (ChannelState.AWAITING_LOCKIN, ChannelState.OPEN, ChannelState.SHUTDOWN,
        ChannelState.NEGOTIATING)
ZERO32 = b"\x00" * 32


class Reestablish:
    """The reestablish flow of the node's channel manager."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.manager = node.channels
        self.delay_s = 0.0  # dev: wait this long before handling a channel_reestablish

    def on_disconnected(self, peer_id: bytes) -> None:
        """A channel still being negotiated is forgotten when its peer goes away."""
        self.manager.unsync(peer_id)
        for ch in self.manager.with_peer(peer_id):
            if ch.state == ChannelState.OPENING:
                ch.sm.set_state(ChannelState.ABORTED)
                self.manager.channels.pop(ch.cid, None)
                self.node.opening.abandon(ch, "peer disconnected during the opening")

    async def on_connected(self, peer_id: bytes) -> None:
        link = self.node.links.links.get(peer_id)
        if link is not None and link.address:
            known = self.node.store.value("peer_addresses", {})
            if known.get(peer_id) != link.address:
                known[peer_id] = link.address
                self.node.store.set_value("peer_addresses", known)
        channels = [ch for ch in self.manager.with_peer(peer_id)
                    if ch.state in LIVE and ch.ledger is not None]
        for ch in channels:
            await self._forget_unsigned(ch)
        for ch in channels:
            await self.manager.send(ch, "channel_reestablish", self._body(ch))

    async def _forget_unsigned(self, ch: Channel) -> None:
        offered = {h.htlc_id: h for s, h in ch.ledger.htlcs_pending(Side.REMOTE)
                   if s == Side.LOCAL}
        ch.ledger.discard_unsigned_updates(Side.LOCAL)
        ch.ledger.discard_unsigned_updates(Side.REMOTE)
        self.manager.save(ch)
        self.manager.forget_handled(ch)  # a discarded settle or fail must be made again
        for htlc_id, htlc in sorted(offered.items()):
            if ch.ledger.get_htlc(Side.LOCAL, htlc_id) != htlc:
                if self.node.forwarder.is_forward(ch, htlc):
                    await self.node.forwarder.on_discarded(ch, htlc)
                else:
                    await self.node.payments.on_htlc_discarded(htlc)

    def _body(self, ch: Channel) -> dict[str, Any]:
        led = ch.ledger
        oldest_remote = led.ctn_oldest_unrevoked(Side.REMOTE)
        last_secret = ZERO32
        if oldest_remote > 0:
            last_secret = ch.revocations.get(shachain.index_for_commitment(oldest_remote - 1))
        return {"channel_id": ch.cid, "next_commitment_number": led.ctn_latest(Side.LOCAL) + 1,
                "next_revocation_number": oldest_remote,
                "your_last_per_commitment_secret": last_secret,
                "my_current_per_commitment_point": ch.local_point(led.ctn_latest(Side.LOCAL))}

    async def on_channel_reestablish(self, peer_id: bytes, body: dict[str, Any]) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # dev: slow to take the peer's message in
        ch = self.manager.channels.get(body["channel_id"])
        if ch is None or ch.peer_id != peer_id or ch.ledger is None:
            await self.manager.warn(peer_id, body["channel_id"],
                                    "channel_reestablish for an unknown channel")
            return
        if ch.state not in LIVE:
            return
        self.manager.synced.add(ch.cid)
        led = ch.ledger
        their_next_commit, their_next_revoke = body["next_commitment_number"], \
            body["next_revocation_number"]
        remote_latest, local_latest = led.ctn_latest(Side.REMOTE), led.ctn_latest(Side.LOCAL)
        if their_next_commit > remote_latest + 1 or their_next_revoke > local_latest:
            await self._data_loss(ch, body)
            return
        if their_next_commit < remote_latest or their_next_revoke < local_latest - 1:
            await self.manager.fail_channel(ch, "peer is behind by more than one state: "
                                            "it lost data")
            return
        resend_commit = their_next_commit == remote_latest and remote_latest > 0
        resend_revoke = their_next_revoke == local_latest - 1
        steps = [("revoke", resend_revoke), ("commit", resend_commit)]
        if ch.last_sent == "revoke":
            steps.reverse()  # the commitment went out first: keep that order
        for what, needed in steps:
            if needed and what == "revoke":
                await self._resend_revoke(ch, local_latest)
            elif needed:
                await self._resend_commit(ch, remote_latest)
        # updates made after the link came back but before this message were held
        # (nothing but channel_reestablish may go first): they go out now, before the
        # commitment_signed that will cover them
        for update in ch.ledger.unacked_local_updates():
            if update.remote_ctn > remote_latest:
                kind, message = self._update_message(ch, update)
                await self.manager.send(ch, kind, message)
        await self._resume(ch)
        self.node.events.emit("channel_reestablished", channel_id=ch.cid, peer=peer_id,
                              resent_commit=resend_commit, resent_revoke=resend_revoke)

    async def _resend_revoke(self, ch: Channel, local_latest: int) -> None:
        await self.manager.send(ch, "revoke_and_ack", {
            "channel_id": ch.cid, "per_commitment_secret": ch.local_secret(local_latest - 1),
            "next_per_commitment_point": ch.local_point(local_latest + 1)})

    async def _resend_commit(self, ch: Channel, remote_latest: int) -> None:
        for update in ch.ledger.unacked_local_updates():
            if update.remote_ctn != remote_latest:
                continue
            kind, body = self._update_message(ch, update)
            await self.manager.send(ch, kind, body)
        sig, htlc_sigs = ch.sign_remote(remote_latest)  # deterministic: the same signature
        await self.manager.send(ch, "commitment_signed", {
            "channel_id": ch.cid, "signature": sig, "htlc_signatures": htlc_sigs})

    @staticmethod
    def _update_message(ch: Channel, update: Any) -> tuple[str, dict[str, Any]]:
        if update.kind == UpdateKind.ADD:
            h = update.htlc
            return "update_add_htlc", {
                "channel_id": ch.cid, "id": h.htlc_id, "amount_msat": h.amount_msat,
                "payment_hash": h.payment_hash, "cltv_expiry": h.cltv_expiry,
                "onion_routing_packet": h.onion}
        if update.kind == UpdateKind.SETTLE:
            htlc = ch.ledger.get_htlc(Side.REMOTE, update.htlc_id)
            return "update_fulfill_htlc", {"channel_id": ch.cid, "id": update.htlc_id,
                                           "payment_preimage": ch.preimages[htlc.payment_hash]}
        if update.kind == UpdateKind.FAIL:
            kind, body = ch.sent_fails[update.htlc_id]
            return kind, body
        return "update_fee", {"channel_id": ch.cid, "feerate_per_kw": update.feerate_per_kw}

    async def _data_loss(self, ch: Channel, body: dict[str, Any]) -> None:
        """The peer is ahead of us: never broadcast our stale commitment; ask it to close."""
        ch.onchain["data_loss"] = True
        ch.onchain["their_point"] = body["my_current_per_commitment_point"]
        self.manager.save(ch)
        self.node.events.emit("data_loss", channel_id=ch.cid)
        await self.manager.send(ch, "error", {"channel_id": ch.cid,
                                              "data": "we lost data; please close the channel"})

    async def _resume(self, ch: Channel) -> None:
        if ch.state == ChannelState.AWAITING_LOCKIN and ch.ready_sent:
            await self.node.opening.send_ready(ch)
        if ch.state == ChannelState.OPEN and ch.ledger.ctn_latest(Side.LOCAL) == 0 and \
                ch.ready_sent:
            await self.node.opening.send_ready(ch)
        if ch.shutdown_local is not None:
            await self.manager.send(ch, "shutdown", {"channel_id": ch.cid,
                                                     "scriptpubkey": ch.shutdown_local})
        if ch.state == ChannelState.NEGOTIATING:
            ch.closing_tx = None  # fee negotiation starts over
            if ch.local_is_opener:
                await self.node.closing.propose_estimate(ch)
        await self.manager.resume_incoming(ch)
        self.manager.schedule_commit(ch)
