"""The channel manager: every channel of a peer, their messages and their storage.

It turns the pure :class:`peers.channel.Channel` into protocol: it sends what a
channel produces (persisting first), dispatches what arrives, drives the
commitment dance (one ``commitment_signed`` batches every pending update and is
sent as soon as the previous round's ``revoke_and_ack`` is in), and fails a
channel whose peer breaks the protocol.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from emulator.crypto import shachain
from emulator.errors import BadRequest, DecodeError, LnemuError, NotFound
from peers import crashpoints
from peers.channel import Channel, ChannelError, ProtocolViolation
from peers.channel_codec import channel_from_wire, channel_to_wire
from peers.channel_state import ChannelState
from peers.htlc_types import Htlc, HtlcLedgerError, Side

HtlcHook = Callable[[Channel, Htlc], Awaitable[None]]
MIN_FEERATE_PER_KW = 253  # BOLT 3's floor
CLOSED_STATES = (ChannelState.FORCE_CLOSING, ChannelState.CLOSING, ChannelState.CLOSED,
                 ChannelState.ABORTED)
UPDATE_MESSAGES = {"update_add_htlc", "update_fulfill_htlc", "update_fail_htlc",
                   "update_fail_malformed_htlc", "update_fee", "commitment_signed",
                   "revoke_and_ack", "shutdown", "closing_signed", "channel_ready"}
ZERO32 = b"\x00" * 32
SETTLE_COMMIT_WAIT_S = 0.002  # how long a commitment that only settles or fails waits


class ChannelManager:
    """Owns the peer's channels; the node wires it to links, chain and wallet."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.log = node.log
        self.events = node.events
        self.store = node.store
        self.channels: dict[bytes, Channel] = {}
        self.on_incoming_htlc: HtlcHook | None = None   # payee / forwarder
        # told of an incoming HTLC once it is in our commitment, before it is irrevocable
        self.on_incoming_signed: Callable[[Htlc], None] | None = None
        self.on_htlc_fulfilled: Callable[[Channel, Htlc, bytes], Awaitable[None]] | None = None
        self.on_htlc_failed: Callable[[Channel, Htlc, dict], Awaitable[None]] | None = None
        # channels whose commitment_signed is due: cid -> the scheduled call, and if it waits
        self._commit_scheduled: dict[bytes, tuple[asyncio.TimerHandle | asyncio.Task,
                                                  bool]] = {}
        self._rekeyed: set[bytes] = set()  # channels whose temporary-id record is gone
        self._handled: dict[bytes, set[int]] = {}  # incoming HTLC ids handed on, per channel
        self.synced: set[bytes] = set()  # channels reestablished in the current session
        self.withhold_revoke = False  # dev/chaos: a byzantine peer that never revokes
        self.planted_bug = ""  # dev: a known bug switched on to prove the checker finds it

    # --- storage ------------------------------------------------------------------
    def load(self) -> None:
        """Load every channel from the store (after a restart)."""
        for record in self.store.all("channels"):
            cid = record.get("channel_id") or record["temp_id"]
            ch = channel_from_wire(record, self.node.node_secret, self.store.htlcs(cid),
                                   self.store.old_sigs(cid))
            if record.get("old_sigs"):  # an older store kept them in the record: move them
                ch.old_sig_changes[0].extend(ch.old_sigs.items())
            self._attach(ch)
            self.channels[ch.cid] = ch

    def save(self, ch: Channel) -> None:
        """Persist ``ch`` in one transaction (call before sending what depends on it):
        its record and the HTLC records its ledger changed since the last save."""
        changed, dropped = ch.ledger.take_changes() if ch.ledger else ([], [])
        sigs_added, sigs_dropped = ch.take_old_sig_changes()
        try:
            with self.store.transaction():
                if ch.channel_id and ch.temp_id != ch.channel_id and \
                        ch.channel_id not in self._rekeyed:
                    self.store.db.execute("DELETE FROM channels WHERE cid = ?", (ch.temp_id,))
                    self.store.rekey_htlcs(ch.temp_id, ch.channel_id)
                    self._rekeyed.add(ch.channel_id)
                self.store.put("channels", ch.cid, channel_to_wire(ch, htlcs=False))
                self.store.write_htlcs(ch.cid, changed, dropped)
                self.store.write_old_sigs(ch.cid, sigs_added, sigs_dropped)
        except BaseException:
            if ch.ledger:
                ch.ledger.restore_changes(changed, dropped)
            added, gone = ch.old_sig_changes  # made meanwhile (none: nothing awaits here)
            ch.old_sig_changes = (sigs_added + added, sigs_dropped + gone)
            raise

    def _attach(self, ch: Channel) -> None:
        def observe(old: ChannelState, new: ChannelState) -> None:
            self.log.info("channel %s: %s -> %s", ch.cid.hex()[:16], old.name, new.name)
            self.events.emit("channel_state", channel_id=ch.cid, old=old.name, new=new.name,
                             peer=ch.peer_id)
        ch.sm.observer = observe

    def add(self, ch: Channel) -> None:
        """A channel opened in this session (no reestablish needed before updates)."""
        self._attach(ch)
        self.channels[ch.cid] = ch
        self.synced.add(ch.cid)

    def rekey(self, ch: Channel, channel_id: bytes) -> None:
        """Move a channel from its temporary id to its real one."""
        self.channels.pop(ch.temp_id, None)
        ch.channel_id = channel_id
        self.channels[channel_id] = ch
        if ch.temp_id in self.synced:
            self.synced.add(channel_id)

    def unsync(self, peer_id: bytes) -> None:
        """The link to ``peer_id`` dropped: its channels wait for channel_reestablish."""
        for ch in self.with_peer(peer_id):
            self.synced.discard(ch.cid)

    def get(self, cid: Any) -> Channel:
        key = bytes.fromhex(cid) if isinstance(cid, str) else cid
        ch = self.channels.get(key) if isinstance(key, bytes) else None
        if ch is None:
            raise NotFound(f"unknown channel {cid!r}")
        return ch

    def with_peer(self, peer_id: bytes) -> list[Channel]:
        return [ch for ch in self.channels.values() if ch.peer_id == peer_id]

    # --- sending --------------------------------------------------------------------
    async def send(self, ch: Channel, type_name: str, body: dict[str, Any]) -> bool:
        """Send one message for ``ch``; False when the peer is not connected."""
        if type_name in UPDATE_MESSAGES and ch.cid not in self.synced:
            # BOLT 2: after a reconnection channel_reestablish comes first; what we
            # would send now is retransmitted by the reestablish exchange instead
            self.log.info("channel %s: %s held until channel_reestablish", ch.cid.hex()[:16],
                          type_name)
            return False
        crashpoints.reach("before_send", type_name)
        try:
            await self.node.links.send(ch.peer_id, type_name, body)
        except LnemuError as exc:
            self.log.info("channel %s: %s not sent: %s", ch.cid.hex()[:16], type_name, exc)
            return False
        crashpoints.reach("after_send", type_name)
        return True

    def schedule_commit(self, ch: Channel, wait: bool = False) -> None:
        """Sign the peer's next commitment soon, batching updates made meanwhile. With
        ``wait``, a little later: a commitment that only settles or fails HTLCs is
        owed, not awaited (the fulfill itself went out already), and waiting leaves
        the cores to the hops the fulfill travels through."""
        scheduled = self._commit_scheduled.get(ch.cid)
        if scheduled is not None:
            handle, waits = scheduled
            if wait or not waits:
                return
            handle.cancel()  # an update that is awaited: no more waiting
        if wait:
            handle: asyncio.TimerHandle | asyncio.Task = asyncio.get_running_loop().call_later(
                SETTLE_COMMIT_WAIT_S, lambda: self.node.spawn(self._commit(ch), "commit"))
        else:  # it starts next turn: it signs this turn's updates, and leaves with them
            handle = self.node.spawn(self._commit(ch), "commit")
        self._commit_scheduled[ch.cid] = (handle, wait)

    def _can_commit(self, ch: Channel) -> bool:
        """Is a commitment_signed due now: updates to sign, the last one answered?"""
        return ch.state in (ChannelState.OPEN, ChannelState.SHUTDOWN,
                            ChannelState.NEGOTIATING) \
            and not ch.ledger.awaiting_revoke() \
            and ch.ledger.has_changes_to_sign(Side.REMOTE) \
            and self.node.links.is_connected(ch.peer_id)  # else channel_reestablish will

    def _sign_commit(self, ch: Channel) -> dict[str, Any]:
        """Sign the remote's next commitment; the caller persists, then sends the body."""
        ctn = ch.ledger.send_commit()
        sig, htlc_sigs = ch.sign_remote(ctn)
        ch.last_sent = "commit"
        self.events.emit("commitment_signed", channel_id=ch.cid, ctn=ctn,
                         htlcs=len(htlc_sigs), side="remote")
        return {"channel_id": ch.cid, "signature": sig, "htlc_signatures": htlc_sigs}

    async def _commit(self, ch: Channel) -> None:
        self._commit_scheduled.pop(ch.cid, None)
        loop = asyncio.get_running_loop()
        if not self._can_commit(ch):
            loop.call_soon(self._warm, ch)
            return
        body = self._sign_commit(ch)
        if self.planted_bug == "sign_before_persist":  # dev: the ordering bug, on purpose
            await self.send(ch, "commitment_signed", body)
            await asyncio.sleep(0.5)  # "persist later": the window a crash falls into
        self.save(ch)  # never sign two states with one number: persist the commitment first
        if self.planted_bug != "sign_before_persist":
            await self.send(ch, "commitment_signed", body)
        loop.call_soon(self._warm, ch)  # after the flush that sends it: while the peer answers

    # --- receiving --------------------------------------------------------------------
    async def dispatch(self, peer_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        """Handle one channel message; a protocol violation fails the channel."""
        crashpoints.reach("before_recv", type_name)
        cid = body.get("channel_id") or body.get("temporary_channel_id")
        ch = self.channels.get(cid) if cid else None
        if type_name == "open_channel":
            await self.node.opening.on_open_channel(peer_id, body)
        elif type_name in ("error", "warning") and (ch is None or ch.peer_id != peer_id):
            # never answer an error or warning (two peers would echo forever)
            self.log.warning("%s from %s: %s", type_name, peer_id.hex()[:16], body["data"])
            self.events.emit(f"received_{type_name}", peer=peer_id, data=body["data"])
        elif ch is None or ch.peer_id != peer_id:
            await self.warn(peer_id, cid or ZERO32, f"{type_name} for an unknown channel")
            return
        else:
            if ch.state in CLOSED_STATES and type_name in UPDATE_MESSAGES:
                # BOLT 2: once a commitment is on its way to the chain, no new state
                self.log.info("ignoring %s on channel %s: it is %s", type_name,
                              ch.cid.hex()[:16], ch.state.name)
                return
            handler = getattr(self, f"on_{type_name}", None) or getattr(
                self.node.opening, f"on_{type_name}", None) or getattr(
                self.node.closing, f"on_{type_name}", None) or getattr(
                self.node.gossip, f"on_{type_name}", None)
            try:
                await handler(ch, body)
            except (ProtocolViolation, HtlcLedgerError, shachain.ShachainError) as exc:
                await self.fail_channel(ch, f"{type_name}: {exc}")
            except DecodeError as exc:  # bad gossip signatures and the like: warn only
                await self.warn(peer_id, ch.cid, f"{type_name}: {exc}")
        crashpoints.reach("after_recv", type_name)

    async def warn(self, peer_id: bytes, cid: bytes, text: str) -> None:
        self.log.warning("to %s: warning: %s", peer_id.hex()[:16], text)
        try:
            await self.node.links.send(peer_id, "warning", {"channel_id": cid, "data": text})
        except LnemuError:
            pass

    async def fail_channel(self, ch: Channel, reason: str) -> None:
        """BOLT 2/1: send an error and force close (if anything is on the line)."""
        self.log.warning("channel %s failed: %s", ch.cid.hex()[:16], reason)
        self.events.emit("channel_failed", channel_id=ch.cid, reason=reason)
        await self.send(ch, "error", {"channel_id": ch.cid, "data": reason[:500]})
        if ch.state in (ChannelState.OPENING,):
            ch.sm.set_state(ChannelState.ABORTED)
            self.save(ch)
        elif ch.sm.can_move(ChannelState.FORCE_CLOSING):
            await self.node.closing.force_close(ch, reason)

    async def on_error(self, ch: Channel, body: dict[str, Any]) -> None:
        """The peer failed the channel: close it on chain with our latest commitment."""
        self.log.warning("peer failed channel %s: %s", ch.cid.hex()[:16], body["data"])
        self.events.emit("channel_error_received", channel_id=ch.cid, data=body["data"])
        if ch.sm.can_move(ChannelState.FORCE_CLOSING):
            await self.node.closing.force_close(ch, f"peer error: {body['data']}")

    async def on_warning(self, ch: Channel, body: dict[str, Any]) -> None:
        self.log.warning("peer warning on %s: %s", ch.cid.hex()[:16], body["data"])
        self.events.emit("received_warning", peer=ch.peer_id, channel_id=ch.cid,
                         data=body["data"])

    async def on_update_add_htlc(self, ch: Channel, body: dict[str, Any]) -> None:
        htlc = ch.receive_add(body, self.node.height)
        self.events.emit("htlc_received", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         amount_msat=htlc.amount_msat, payment_hash=htlc.payment_hash)

    async def on_update_fulfill_htlc(self, ch: Channel, body: dict[str, Any]) -> None:
        htlc = ch.receive_fulfill(body["id"], body["payment_preimage"])
        # not saved here: until our next revocation the peer retransmits this fulfill
        # after any reconnect, and what we do with the preimage persists on its own
        self.events.emit("htlc_settled", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="out")
        if self.on_htlc_fulfilled is not None:
            await self.on_htlc_fulfilled(ch, htlc, body["payment_preimage"])

    async def on_update_fail_htlc(self, ch: Channel, body: dict[str, Any]) -> None:
        htlc = ch.offered_htlc(body["id"])
        ch.ledger.recv_fail(body["id"])
        self.events.emit("htlc_failed", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="out")
        if self.on_htlc_failed is not None:
            await self.on_htlc_failed(ch, htlc, {"reason": body["reason"]})

    async def on_update_fail_malformed_htlc(self, ch: Channel, body: dict[str, Any]) -> None:
        if not body["failure_code"] & 0x8000:
            raise ProtocolViolation("update_fail_malformed_htlc without the BADONION bit")
        htlc = ch.offered_htlc(body["id"])
        ch.ledger.recv_fail(body["id"])
        self.events.emit("htlc_failed", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="out", malformed=True)
        if self.on_htlc_failed is not None:
            await self.on_htlc_failed(ch, htlc, {"malformed_code": body["failure_code"]})

    async def on_update_fee(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.local_is_opener:
            raise ProtocolViolation("update_fee from the non-opener")
        if not MIN_FEERATE_PER_KW <= body["feerate_per_kw"] <= 100_000:
            raise ProtocolViolation(f"unreasonable feerate {body['feerate_per_kw']}")
        ch.ledger.recv_fee(body["feerate_per_kw"])

    async def on_commitment_signed(self, ch: Channel, body: dict[str, Any]) -> None:
        ctn = ch.ledger.recv_commit()
        ch.check_local_sigs(ctn, body["signature"], body["htlc_signatures"])
        ch.accept_local_sigs(ctn, body["signature"], body["htlc_signatures"])
        secret = ch.local_secret(ctn - 1)
        ch.ledger.send_revoke()
        ch.last_sent = "revoke"
        self.events.emit("revocation", channel_id=ch.cid, ctn=ctn - 1, side="local")
        # our own commitment_signed, if due, goes right after the revocation (no extra
        # turn of the loop) and covers every update sent before it; signed now, it is
        # persisted with the revocation, in one write
        commit = self._sign_commit(ch) if not self.withhold_revoke and \
            not self.planted_bug and self._can_commit(ch) else None
        self.save(ch)  # persist before revoking: the old state is dead from here on
        self.node.receiver.check_settled(ch)
        if self.withhold_revoke:
            return
        await self.send(ch, "revoke_and_ack", {
            "channel_id": ch.cid, "per_commitment_secret": secret,
            "next_per_commitment_point": ch.local_point(ctn + 1)})
        if commit is None:
            await self._commit(ch)
            return
        await self.send(ch, "commitment_signed", commit)
        asyncio.get_running_loop().call_soon(self._warm, ch)

    def _warm(self, ch: Channel) -> None:
        """While the peer answers: derive the next commitments' keys, and show the
        incoming HTLCs now in our commitment to whoever handles them once irrevocable
        (the payee or forwarder peels their onions meanwhile)."""
        ch.warm()
        if self.on_incoming_signed is None or ch.ledger is None:
            return
        handled = self._handled.get(ch.cid, ())
        for offerer, htlc in ch.ledger.htlcs(Side.LOCAL):
            if offerer is Side.REMOTE and htlc.htlc_id not in handled:
                self.on_incoming_signed(htlc)

    async def on_revoke_and_ack(self, ch: Channel, body: dict[str, Any]) -> None:
        if not ch.ledger.awaiting_revoke():
            raise ProtocolViolation("revoke_and_ack without a commitment_signed to answer")
        revoked = ch.ledger.ctn_latest(Side.REMOTE) - 1
        secret = body["per_commitment_secret"]
        from emulator.crypto.keys import per_commitment_point
        if per_commitment_point(secret) != ch.remote_points.get(revoked):
            raise ProtocolViolation(f"revocation secret does not match commitment {revoked}")
        ch.revocations.insert(shachain.index_for_commitment(revoked), secret)
        ch.remote_points[revoked + 2] = body["next_per_commitment_point"]
        ch.remote_points.pop(revoked - 1, None)
        ch.ledger.recv_revoke()
        self.save(ch)
        self.events.emit("revocation", channel_id=ch.cid, ctn=revoked, side="remote")
        await self.node.tower_client.on_revocation(ch, revoked)
        await self.node.closing.maybe_negotiate(ch)
        self.node.receiver.check_settled(ch)
        await self.resume_incoming(ch)
        self.schedule_commit(ch)

    async def resume_incoming(self, ch: Channel) -> None:
        """Hand every irrevocably committed, unresolved incoming HTLC to the payee or
        forwarder once (after a restart, again: nothing is lost)."""
        if self.on_incoming_htlc is None or ch.state != ChannelState.OPEN:
            return
        handled = self._handled.setdefault(ch.cid, set())
        for htlc_id in ch.ledger.irrevocably_added(Side.REMOTE):
            if htlc_id not in handled:
                handled.add(htlc_id)
                await self.on_incoming_htlc(ch, ch.ledger.get_htlc(Side.REMOTE, htlc_id))

    async def check_feerates(self) -> None:
        """As opener, keep each channel's feerate near the chain's estimate (update_fee)."""
        mine = [ch for ch in self.channels.values() if ch.local_is_opener and
                ch.state == ChannelState.OPEN and self.node.links.is_connected(ch.peer_id)]
        if not mine:
            return
        try:
            estimate = await self.node.chain.call("estimatefee")
        except LnemuError:
            return
        target = max(MIN_FEERATE_PER_KW, estimate["feerate_sat_per_kb"] // 4)
        for ch in mine:
            current = ch.ledger.feerate(Side.REMOTE, ch.ledger.ctn_latest(Side.REMOTE) + 1)
            if abs(target - current) * 5 <= current:  # within 20%: leave it
                continue
            try:
                ch.ledger.send_fee(target)
            except HtlcLedgerError:
                continue
            self.events.emit("update_fee", channel_id=ch.cid, feerate_per_kw=target)
            await self.send(ch, "update_fee", {"channel_id": ch.cid, "feerate_per_kw": target})
            self.schedule_commit(ch)

    def revealed(self, ch: Channel, payment_hash: bytes) -> bytes | None:
        """The preimage of ``payment_hash`` if we ever revealed it on this node."""
        return ch.preimages.get(payment_hash) or self.store.value(
            f"revealed:{payment_hash.hex()}")

    def forget_handled(self, ch: Channel) -> None:
        """Incoming HTLCs of ``ch`` are handed on again by the next resume_incoming."""
        self._handled.pop(ch.cid, None)

    async def check_deadlines(self, height: int) -> None:
        """BOLT 2: an HTLC its peer does not resolve in time fails the channel on chain."""
        margin = self.node.config.timers.htlc_deadline_blocks
        claim_margin = self.node.config.timers.fulfilled_deadline_blocks
        for ch in list(self.channels.values()):
            if ch.ledger is None or not ch.sm.can_move(ChannelState.FORCE_CLOSING) or \
                    ch.onchain.get("data_loss"):
                continue
            for offerer, htlc in ch.ledger.htlcs(Side.LOCAL):
                ours_expiring = offerer == Side.LOCAL and height >= htlc.cltv_expiry - margin + 1
                theirs_known = offerer == Side.REMOTE and htlc.payment_hash in ch.preimages \
                    and height >= htlc.cltv_expiry - claim_margin
                if ours_expiring or theirs_known:
                    await self.node.closing.force_close(
                        ch, f"HTLC {htlc.htlc_id} ({offerer.name.lower()}) reaches its "
                            f"deadline at height {height} (expiry {htlc.cltv_expiry})")
                    break

    # --- local operations -------------------------------------------------------------
    async def add_htlc(self, ch: Channel, amount_msat: int, payment_hash: bytes,
                       cltv_expiry: int, onion: bytes) -> Htlc:
        """Offer an HTLC on ``ch`` (checked first); the commitment follows."""
        if not self.node.links.is_connected(ch.peer_id):
            raise ChannelError("peer is not connected")
        ch.check_can_add(amount_msat, cltv_expiry, self.node.height)
        htlc = ch.ledger.send_add(amount_msat, payment_hash, cltv_expiry, onion)
        self.events.emit("htlc_offered", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         amount_msat=amount_msat, payment_hash=payment_hash)
        self.schedule_commit(ch)  # first: its commitment is signed before this turn's flush
        await self.send(ch, "update_add_htlc", {
            "channel_id": ch.cid, "id": htlc.htlc_id, "amount_msat": amount_msat,
            "payment_hash": payment_hash, "cltv_expiry": cltv_expiry,
            "onion_routing_packet": onion})
        return htlc

    async def fulfill_htlc(self, ch: Channel, htlc: Htlc, preimage: bytes) -> None:
        """Settle an HTLC the peer offered us: off chain while the channel takes updates,
        else on chain, with the preimage, from whichever commitment is there (or will be:
        its resolution uses every preimage we know)."""
        if ch.state in CLOSED_STATES:
            ch.preimages[htlc.payment_hash] = preimage
            self.save(ch)
            await self.node.onchain.claim_with_preimage(ch, htlc.payment_hash)
            return
        ch.ledger.send_settle(htlc.htlc_id)
        ch.preimages[htlc.payment_hash] = preimage
        # a small write (not the whole channel): once revealed, never forgotten
        self.store.set_value(f"revealed:{htlc.payment_hash.hex()}", preimage)
        self.events.emit("htlc_settled", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="in",
                         amount_msat=htlc.amount_msat)
        await self.send(ch, "update_fulfill_htlc", {"channel_id": ch.cid, "id": htlc.htlc_id,
                                                     "payment_preimage": preimage})
        self.schedule_commit(ch, wait=True)

    async def fail_htlc(self, ch: Channel, htlc: Htlc, reason: bytes) -> None:
        """Fail an HTLC the peer offered us, with an (encrypted) error onion."""
        ch.ledger.send_fail(htlc.htlc_id)
        body = {"channel_id": ch.cid, "id": htlc.htlc_id, "reason": reason}
        ch.sent_fails[htlc.htlc_id] = ("update_fail_htlc", body)
        self.save(ch)
        self.events.emit("htlc_failed", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="in")
        await self.send(ch, "update_fail_htlc", body)
        self.schedule_commit(ch, wait=True)

    async def fail_malformed(self, ch: Channel, htlc: Htlc, exc: Any) -> None:
        """BOLT 4: an onion we could not parse goes back as update_fail_malformed_htlc."""
        ch.ledger.send_fail(htlc.htlc_id)
        body = {"channel_id": ch.cid, "id": htlc.htlc_id,
                "sha256_of_onion": exc.sha256_of_onion, "failure_code": int(exc.failure_code)}
        ch.sent_fails[htlc.htlc_id] = ("update_fail_malformed_htlc", body)
        self.save(ch)
        self.events.emit("htlc_failed", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                         payment_hash=htlc.payment_hash, direction="in", malformed=True)
        await self.send(ch, "update_fail_malformed_htlc", body)
        self.schedule_commit(ch, wait=True)

    def new_index(self) -> int:
        """The next channel index (for key derivation); persisted."""
        index = self.store.value("next_channel_index", 0)
        self.store.set_value("next_channel_index", index + 1)
        return index

    def temp_id(self) -> bytes:
        return os.urandom(32)

    def check_open(self, cid: Any) -> Channel:
        ch = self.get(cid)
        if ch.state != ChannelState.OPEN:
            raise BadRequest(f"channel {ch.cid.hex()} is {ch.state.name}")
        return ch
