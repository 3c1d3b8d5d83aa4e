"""Forwarding HTLCs (BOLT 4): peel, check against our channel_update, pass it on.

An incoming HTLC whose onion names a next channel is checked — amount and fee by
the exact BOLT 7 formula, CLTV delta, expiry, the outgoing channel's limits — then
offered downstream, linked to its upstream HTLC (the link is persisted before the
downstream HTLC exists). A fulfill downstream settles upstream with the same
preimage; a failure downstream goes upstream wrapped in our layer of the error
onion; a check that fails here goes upstream as an error built by us.
"""
from __future__ import annotations

from typing import Any

from emulator.crypto import sphinx
from emulator.crypto.failures import FailureCode
from emulator.errors import LnemuError
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_types import Htlc, HtlcLedgerError, Side
from peers.onion_payloads import HopPayload, failure_message

MIN_EXPIRY_MARGIN = 3  # blocks we want before an outgoing HTLC's expiry


def _key(cid: bytes, htlc_id: int) -> str:
    return f"{cid.hex()}:{htlc_id}"


class Forwarder:
    """The node's forwarding table and its checks."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store = node.store
        # downstream "cid:htlc_id" -> the upstream HTLC it forwards, one record each
        self.links: dict[str, dict[str, Any]] = dict(node.store.items("forwards"))
        self._upstream_index = {(link["in_cid"], link["in_id"]): key
                                for key, link in self.links.items()}
        legacy = node.store.value("forwards")  # an older store keeps one map in kv
        if legacy is not None:
            for key, link in legacy.items():
                self._link(key, link)
            node.store.delete("kv", "forwards")
        self.earned_msat = node.store.value("fees_earned_msat", 0)

    def _link(self, key: str, link: dict[str, Any]) -> None:
        self.links[key] = link
        self._upstream_index[(link["in_cid"], link["in_id"])] = key
        self.store.put("forwards", key, link)

    def _unlink(self, key: str) -> dict[str, Any] | None:
        link = self.links.pop(key, None)
        if link is not None:
            if self._upstream_index.get((link["in_cid"], link["in_id"])) == key:
                del self._upstream_index[(link["in_cid"], link["in_id"])]
            self.store.delete("forwards", key)
        return link

    @property
    def policy(self) -> tuple[int, int, int]:
        cfg = self.node.config
        delta = cfg.cltv_expiry_delta or cfg.timers.cltv_expiry_delta
        return cfg.fee_base_msat, cfg.fee_proportional_millionths, delta

    def channel_by_scid(self, scid: int) -> Channel | None:
        for ch in self.node.channels.channels.values():
            if ch.short_channel_id == scid and ch.state == ChannelState.OPEN:
                return ch
        return None

    def is_forward(self, ch: Channel, htlc: Htlc) -> bool:
        """True if ``htlc`` (offered by us on ``ch``) carries a forward of ours. A link
        whose hash differs is stale (its HTLC id was reused after a restart): dropped."""
        key = _key(ch.cid, htlc.htlc_id)
        link = self.links.get(key)
        if link is not None and link["payment_hash"] != htlc.payment_hash:
            self._unlink(key)
            return False
        return link is not None

    async def forward(self, ch: Channel, htlc: Htlc, payload: HopPayload,
                      peeled: sphinx.PeeledOnion) -> None:
        """Check and pass on an HTLC; on any problem, fail it upstream with the code.
        An HTLC handed on again (after a reconnection or a restart) that we forwarded
        already waits for its downstream outcome: it is never forwarded twice."""
        if self.downstream_of(ch, htlc) is not None:
            return
        out = self.channel_by_scid(payload.short_channel_id) \
            if payload.short_channel_id is not None else None
        height = await self.node.chain_height()
        problem = self._check(htlc, payload, out, height)
        if problem is None:
            problem = await self._offer(ch, htlc, payload, peeled, out)
        if problem is not None:
            self.node.events.emit("forward_failed", channel_id=ch.cid, htlc_id=htlc.htlc_id,
                                  code=int.from_bytes(problem[:2], "big"))
            await self.node.channels.fail_htlc(ch, htlc,
                                               sphinx.build_error(peeled.shared_secret, problem))

    def downstream_of(self, ch: Channel, htlc: Htlc) -> str | None:
        """The link of our forward of incoming ``htlc`` on ``ch``, if we made one."""
        key = self._upstream_index.get((ch.cid, htlc.htlc_id))
        link = self.links.get(key) if key is not None else None
        return key if link is not None and link["payment_hash"] == htlc.payment_hash else None

    def _check(self, htlc: Htlc, payload: HopPayload, out: Channel | None,
               height: int) -> bytes | None:
        if out is None or not self.node.links.is_connected(out.peer_id):
            return failure_message(FailureCode.UNKNOWN_NEXT_PEER)
        base, prop, delta = self.policy
        fee = base + payload.amt_to_forward * prop // 1_000_000
        if htlc.amount_msat < payload.amt_to_forward + fee:
            return failure_message(FailureCode.FEE_INSUFFICIENT,
                                   htlc.amount_msat.to_bytes(8, "big"))
        if htlc.cltv_expiry < payload.outgoing_cltv_value + delta:
            return failure_message(FailureCode.INCORRECT_CLTV_EXPIRY,
                                   htlc.cltv_expiry.to_bytes(4, "big"))
        if payload.outgoing_cltv_value <= height + MIN_EXPIRY_MARGIN:
            return failure_message(FailureCode.EXPIRY_TOO_SOON)
        if payload.amt_to_forward < out.remote.htlc_minimum_msat:
            return failure_message(FailureCode.AMOUNT_BELOW_MINIMUM,
                                   htlc.amount_msat.to_bytes(8, "big"))
        return None

    async def _offer(self, ch: Channel, htlc: Htlc, payload: HopPayload,
                     peeled: sphinx.PeeledOnion, out: Channel) -> bytes | None:
        link = {"in_cid": ch.cid, "in_id": htlc.htlc_id, "secret": peeled.shared_secret,
                "fee_msat": htlc.amount_msat - payload.amt_to_forward,
                "payment_hash": htlc.payment_hash}
        try:  # add_htlc checks what we may offer (connected, open, limits) first
            added = await self.node.channels.add_htlc(out, payload.amt_to_forward,
                                                      htlc.payment_hash,
                                                      payload.outgoing_cltv_value,
                                                      peeled.next_onion)
        except LnemuError:
            return failure_message(FailureCode.TEMPORARY_CHANNEL_FAILURE)
        # Persisted before the downstream commitment is signed (that happens in a later
        # task), so no downstream HTLC can be committed without its upstream link.
        self._link(_key(out.cid, added.htlc_id), link)
        self.node.events.emit("forward_offered", in_channel=ch.cid, in_htlc=htlc.htlc_id,
                              out_channel=out.cid, out_htlc=added.htlc_id,
                              amount_msat=payload.amt_to_forward, fee_msat=link["fee_msat"])
        return None

    def _upstream(self, link: dict[str, Any]) -> tuple[Channel, Htlc] | None:
        ch = self.node.channels.channels.get(link["in_cid"])
        if ch is None:
            return None
        htlc = ch.ledger.get_htlc(Side.REMOTE, link["in_id"])
        return (ch, htlc) if htlc is not None else None

    async def on_fulfilled(self, out: Channel, htlc: Htlc, preimage: bytes) -> None:
        """Downstream settled: settle upstream with the preimage (our fee is earned)."""
        link = self._unlink(_key(out.cid, htlc.htlc_id))
        if link is None:
            return  # settled upstream already (a fulfill seen both off and on chain)
        up = self._upstream(link)
        self.earned_msat += link["fee_msat"]
        self.store.set_value("fees_earned_msat", self.earned_msat)
        self.node.events.emit("forward_settled", payment_hash=htlc.payment_hash,
                              fee_msat=link["fee_msat"])
        if up is None:
            return
        try:  # off chain, or on chain if the upstream channel is there already
            await self.node.channels.fulfill_htlc(up[0], up[1], preimage)
        except HtlcLedgerError as exc:  # our loss, not the downstream peer's fault
            self.node.log.error("forward of %s: upstream HTLC %d on %s not settled: %s",
                                htlc.payment_hash.hex()[:16], up[1].htlc_id,
                                up[0].cid.hex()[:16], exc)
            self.node.events.emit("forward_upstream_lost", payment_hash=htlc.payment_hash,
                                  channel_id=up[0].cid, htlc_id=up[1].htlc_id, error=str(exc))

    async def on_preimage_onchain(self, payment_hash: bytes, preimage: bytes) -> None:
        """A downstream HTLC was claimed on chain: settle its upstream HTLC too."""
        for key, link in list(self.links.items()):
            if link["payment_hash"] == payment_hash:
                cid, htlc_id = key.split(":")
                out = self.node.channels.channels.get(bytes.fromhex(cid))
                htlc = out.ledger.get_htlc(Side.LOCAL, int(htlc_id)) if out else None
                if htlc is not None:
                    await self.on_fulfilled(out, htlc, preimage)

    async def on_discarded(self, out: Channel, htlc: Htlc) -> None:
        """The downstream HTLC never reached a commitment (the link dropped): its id will
        be reused, so the link goes now and the upstream HTLC fails back."""
        link = self._unlink(_key(out.cid, htlc.htlc_id))
        up = self._upstream(link) if link else None
        if up is None or up[0].state != ChannelState.OPEN:
            return
        self.node.events.emit("forward_failed", payment_hash=htlc.payment_hash,
                              reason="downstream link dropped")
        await self.node.channels.fail_htlc(up[0], up[1], sphinx.build_error(
            link["secret"], failure_message(FailureCode.TEMPORARY_CHANNEL_FAILURE)))

    async def on_failed(self, out: Channel, htlc: Htlc, info: dict[str, Any]) -> None:
        """Downstream failed: fail upstream, adding our layer to the error onion."""
        link = self._unlink(_key(out.cid, htlc.htlc_id))
        up = self._upstream(link) if link else None
        if up is None or up[0].state != ChannelState.OPEN:
            return
        if "reason" in info:
            reason = sphinx.wrap_error(link["secret"], info["reason"])
        else:  # BOLT 4: turn update_fail_malformed_htlc into an error from us
            reason = sphinx.build_error(link["secret"], info["malformed_code"].to_bytes(
                2, "big") + bytes(32))
        self.node.events.emit("forward_failed", payment_hash=htlc.payment_hash)
        await self.node.channels.fail_htlc(up[0], up[1], reason)

