"""Opening a channel (BOLT 2): open/accept, funding created/signed, channel_ready.

The opener builds the funding transaction from its wallet but broadcasts it only
once it holds the peer's signature on its first commitment; both sides persist the
channel before sending their signature, and announce ``channel_ready`` once the
funding output is ``minimum_depth`` blocks deep.
"""
from __future__ import annotations

import asyncio
from typing import Any

from emulator.errors import BadRequest
from emulator.tx import OutPoint, Tx
from peers import commitment as cm
from peers.channel import Channel, ChannelError, Params, ProtocolViolation, channel_id_from_funding
from peers.channel_state import ChannelState
from peers.htlc_types import Side

CHAIN_HASH = b"\x06" * 32  # lnemu's regtest-like chain
MIN_FUNDING_SAT = 20_000
MAX_FUNDING_SAT = 2**24 - 1
DUST_LIMIT_SAT = 354
DEFAULT_FEERATE_PER_KW = 253
MAX_TO_SELF_DELAY = 2016


def default_params(funding_sat: int, timers: Any, basepoints: cm.Basepoints) -> Params:
    """Our parameters for a channel of ``funding_sat``."""
    return Params(dust_limit_sat=DUST_LIMIT_SAT,
                  max_htlc_value_in_flight_msat=funding_sat * 1000,
                  channel_reserve_sat=max(funding_sat // 100, DUST_LIMIT_SAT),
                  htlc_minimum_msat=1, to_self_delay=timers.to_self_delay,
                  max_accepted_htlcs=483, basepoints=basepoints)


def _params_body(p: Params) -> dict[str, Any]:
    b = p.basepoints
    return {"dust_limit_satoshis": p.dust_limit_sat,
            "max_htlc_value_in_flight_msat": p.max_htlc_value_in_flight_msat,
            "channel_reserve_satoshis": p.channel_reserve_sat,
            "htlc_minimum_msat": p.htlc_minimum_msat, "to_self_delay": p.to_self_delay,
            "max_accepted_htlcs": p.max_accepted_htlcs, "funding_pubkey": b.funding_pubkey,
            "revocation_basepoint": b.revocation_basepoint,
            "payment_basepoint": b.payment_basepoint,
            "delayed_payment_basepoint": b.delayed_payment_basepoint,
            "htlc_basepoint": b.htlc_basepoint}


def _params_from(body: dict[str, Any], funding_sat: int) -> Params:
    """The peer's parameters, checked as BOLT 2 requires."""
    p = Params(dust_limit_sat=body["dust_limit_satoshis"],
               max_htlc_value_in_flight_msat=body["max_htlc_value_in_flight_msat"],
               channel_reserve_sat=body["channel_reserve_satoshis"],
               htlc_minimum_msat=body["htlc_minimum_msat"],
               to_self_delay=body["to_self_delay"],
               max_accepted_htlcs=body["max_accepted_htlcs"],
               basepoints=cm.Basepoints(body["funding_pubkey"], body["revocation_basepoint"],
                                        body["payment_basepoint"],
                                        body["delayed_payment_basepoint"],
                                        body["htlc_basepoint"]))
    if not 354 <= p.dust_limit_sat <= p.channel_reserve_sat or p.channel_reserve_sat > \
            funding_sat // 5:
        raise ProtocolViolation(f"unreasonable dust limit {p.dust_limit_sat} or reserve "
                                f"{p.channel_reserve_sat}")
    if p.to_self_delay > MAX_TO_SELF_DELAY:
        raise ProtocolViolation(f"to_self_delay {p.to_self_delay} is unreasonably large")
    if not 1 <= p.max_accepted_htlcs <= 483:
        raise ProtocolViolation(f"max_accepted_htlcs {p.max_accepted_htlcs} out of 1..483")
    return p


class Opening:
    """The open flow of the node's channel manager."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.manager = node.channels
        self.waiting: dict[bytes, asyncio.Future] = {}

    def _new_channel(self, peer_id: bytes, funding_sat: int, push_msat: int,
                     opener: bool, temp_id: bytes, feerate: int) -> Channel:
        index = self.manager.new_index()
        secrets = cm.BaseSecrets.derive(self.node.node_secret, index)
        local = default_params(funding_sat, self.node.config.timers, secrets.basepoints())
        return Channel(peer_id=peer_id, index=index, local_is_opener=opener,
                       funding_sat=funding_sat, push_msat=push_msat, feerate_per_kw=feerate,
                       local=local, secrets=secrets, temp_id=temp_id,
                       minimum_depth=self.node.config.timers.min_depth)

    async def fundchannel(self, peer_id: bytes, amount_sat: int, push_msat: int = 0,
                          announce: bool = True) -> Channel:
        """Open a channel of ``amount_sat`` to ``peer_id`` and wait until it is funded."""
        if type(amount_sat) is not int or not MIN_FUNDING_SAT <= amount_sat <= MAX_FUNDING_SAT:
            raise BadRequest(f"amount_sat must be from {MIN_FUNDING_SAT} to {MAX_FUNDING_SAT}")
        if type(push_msat) is not int or not 0 <= push_msat <= amount_sat * 1000 // 2:
            raise BadRequest("push_msat must be from 0 to half the capacity")
        if not self.node.links.is_connected(peer_id):
            raise ChannelError(f"not connected to {peer_id.hex()}")
        self.node.wallet.build_payment(cm.funding_policy(self.node.node_id, peer_id), amount_sat)
        ch = self._new_channel(peer_id, amount_sat, push_msat, True,
                               self.manager.temp_id(), DEFAULT_FEERATE_PER_KW)
        ch.announce = bool(announce)
        self.manager.add(ch)
        future = asyncio.get_running_loop().create_future()
        self.waiting[ch.temp_id] = future
        await self.manager.send(ch, "open_channel", {
            "chain_hash": CHAIN_HASH, "temporary_channel_id": ch.temp_id,
            "funding_satoshis": amount_sat, "push_msat": push_msat,
            "feerate_per_kw": ch.feerate_per_kw, "channel_flags": 1 if ch.announce else 0,
            "first_per_commitment_point": ch.local_point(0), **_params_body(ch.local)})
        try:
            await asyncio.wait_for(future, self.node.config.timers.open_timeout)
        except TimeoutError:
            if ch.state == ChannelState.OPENING:
                ch.sm.set_state(ChannelState.ABORTED)
                self.manager.channels.pop(ch.cid, None)
            raise ChannelError("the peer did not complete the opening in time") from None
        finally:
            self.waiting.pop(ch.temp_id, None)
        return ch

    def abandon(self, ch: Channel, reason: str) -> None:
        """The opening failed: free the funding coins, wake fundchannel with the reason."""
        if ch.funding_tx is not None and ch.local_is_opener:
            self.node.wallet.release(Tx.from_wire(ch.funding_tx))
        self._finish(ch, ChannelError(reason))

    def _finish(self, ch: Channel, error: Exception | None = None) -> None:
        future = self.waiting.get(ch.temp_id)
        if future is not None and not future.done():
            if error is None:
                future.set_result(ch)
            else:
                future.set_exception(error)

    async def on_open_channel(self, peer_id: bytes, body: dict[str, Any]) -> None:
        funding_sat, temp_id = body["funding_satoshis"], body["temporary_channel_id"]
        try:
            if body["chain_hash"] != CHAIN_HASH:
                raise ProtocolViolation("open_channel for another chain")
            if not MIN_FUNDING_SAT <= funding_sat <= MAX_FUNDING_SAT:
                raise ProtocolViolation(f"funding of {funding_sat} sat out of range")
            if body["push_msat"] > funding_sat * 1000:
                raise ProtocolViolation("push_msat exceeds the funding")
            if temp_id in self.manager.channels:
                raise ProtocolViolation("temporary_channel_id already in use")
            remote = _params_from(body, funding_sat)
        except ProtocolViolation as exc:
            await self.manager.warn(peer_id, temp_id, f"open_channel refused: {exc}")
            return
        ch = self._new_channel(peer_id, funding_sat, body["push_msat"], False, temp_id,
                               body["feerate_per_kw"])
        ch.remote = remote
        ch.announce = bool(body["channel_flags"] & 1)
        ch.remote_points[0] = body["first_per_commitment_point"]
        self.manager.add(ch)
        await self.manager.send(ch, "accept_channel", {
            "temporary_channel_id": temp_id, "minimum_depth": ch.minimum_depth,
            "first_per_commitment_point": ch.local_point(0), **_params_body(ch.local)})

    async def on_accept_channel(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state != ChannelState.OPENING or not ch.local_is_opener or ch.remote:
            raise ProtocolViolation("unexpected accept_channel")
        ch.remote = _params_from(body, ch.funding_sat)
        ch.remote_points[0] = body["first_per_commitment_point"]
        ch.minimum_depth = max(ch.minimum_depth, min(body["minimum_depth"], 100))
        funding_tx = self.node.wallet.build_payment(ch.funding_cond, ch.funding_sat)
        self.node.wallet.reserve(funding_tx)
        ch.funding_outpoint = OutPoint(funding_tx.txid, 0)
        ch.funding_tx = funding_tx.to_wire()
        ch.start_ledger()
        sig, _ = ch.sign_remote(0)
        self.manager.rekey(ch, channel_id_from_funding(funding_tx.txid, 0))
        self.manager.save(ch)
        await self.manager.send(ch, "funding_created", {
            "temporary_channel_id": ch.temp_id, "funding_txid": funding_tx.txid,
            "funding_output_index": 0, "signature": sig})

    async def on_funding_created(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state != ChannelState.OPENING or ch.local_is_opener or ch.ledger:
            raise ProtocolViolation("unexpected funding_created")
        ch.funding_outpoint = OutPoint(body["funding_txid"], body["funding_output_index"])
        ch.start_ledger()
        ch.check_local_sigs(0, body["signature"], [])
        ch.accept_local_sigs(0, body["signature"], [])
        sig, _ = ch.sign_remote(0)
        self.manager.rekey(ch, channel_id_from_funding(body["funding_txid"],
                                                       body["funding_output_index"]))
        ch.sm.set_state(ChannelState.AWAITING_LOCKIN)
        self.manager.save(ch)
        await self.manager.send(ch, "funding_signed", {"channel_id": ch.cid, "signature": sig})

    async def on_funding_signed(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state != ChannelState.OPENING or not ch.local_is_opener or ch.local_sigs:
            raise ProtocolViolation("unexpected funding_signed")
        ch.check_local_sigs(0, body["signature"], [])
        ch.accept_local_sigs(0, body["signature"], [])
        ch.sm.set_state(ChannelState.AWAITING_LOCKIN)
        self.manager.save(ch)  # persist before the funding can reach the chain
        tx = Tx.from_wire(ch.funding_tx)
        self.node.wallet.add_unconfirmed(tx)
        await self.node.broadcast(tx, "funding")
        self.node.events.emit("channel_funded", channel_id=ch.cid, peer=ch.peer_id,
                              capacity_sat=ch.funding_sat, txid=tx.txid)
        self._finish(ch)

    # --- lock-in ---------------------------------------------------------------------------
    async def check_depth(self, ch: Channel) -> None:
        """Send channel_ready once the funding output is deep enough."""
        if ch.state != ChannelState.AWAITING_LOCKIN or ch.ready_sent:
            return
        info = await self.node.chain_tx(ch.funding_outpoint.txid)
        if info is None or info.get("confirmations", 0) < ch.minimum_depth:
            return
        ch.funding_height = info["height"]
        ch.short_channel_id = info["height"] << 40 | info["index"] << 16 | \
            ch.funding_outpoint.vout
        ch.ready_sent = True
        self.manager.save(ch)
        await self.send_ready(ch)
        self._maybe_open(ch)

    async def send_ready(self, ch: Channel) -> None:
        await self.manager.send(ch, "channel_ready", {
            "channel_id": ch.cid, "second_per_commitment_point": ch.local_point(1)})

    async def on_channel_ready(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state not in (ChannelState.AWAITING_LOCKIN, ChannelState.OPEN):
            raise ProtocolViolation(f"channel_ready while {ch.state.name}")
        if ch.ledger.ctn_latest(Side.REMOTE) == 0:
            ch.remote_points[1] = body["second_per_commitment_point"]
        ch.ready_received = True
        self.manager.save(ch)
        self._maybe_open(ch)

    def _maybe_open(self, ch: Channel) -> None:
        if ch.ready_sent and ch.ready_received and ch.state == ChannelState.AWAITING_LOCKIN:
            ch.sm.set_state(ChannelState.OPEN)
            self.manager.save(ch)
            self.node.events.emit("channel_open", channel_id=ch.cid, peer=ch.peer_id,
                                  short_channel_id=ch.short_channel_id,
                                  capacity_sat=ch.funding_sat)
            self.node.spawn(self.node.gossip.channel_opened(ch), "announce")
