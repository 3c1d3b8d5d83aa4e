"""Closing channels: cooperatively (shutdown, closing_signed) or by force.

A cooperative close waits until no HTLC is left on either commitment, then the
opener proposes a fee for a transaction paying each side its balance rounded down
to the satoshi (the opener's output carries the fee); the other side accepts a
reasonable fee or counters, and whoever holds both signatures broadcasts. A force
close broadcasts our latest commitment and hands it to the on-chain resolver.
"""
from __future__ import annotations

from typing import Any

import msgpack

from emulator import policy
from emulator.errors import BadRequest, DecodeError
from emulator.tx import Tx, TxIn, TxOut, sighash
from peers import commitment as cm
from peers.channel import Channel, ProtocolViolation
from peers.channel_state import ChannelState
from peers.htlc_types import Side

CLOSE_FEERATE_SAT_PER_KB = 1000
CLOSING_SEQUENCE = 0xFFFFFFFF


def closing_tx(ch: Channel, fee_sat: int) -> Tx:
    """The cooperative closing transaction paying ``fee_sat`` from the opener's side."""
    ctn = ch.ledger.ctn_latest(Side.LOCAL)
    local_sat = ch.ledger.balance_msat(Side.LOCAL, Side.LOCAL, ctn) // 1000
    remote_sat = ch.ledger.balance_msat(Side.REMOTE, Side.LOCAL, ctn) // 1000
    if ch.local_is_opener:
        local_sat -= fee_sat
    else:
        remote_sat -= fee_sat
    outputs = [TxOut(sat, cond) for sat, cond in ((local_sat, ch.shutdown_local),
                                                   (remote_sat, ch.shutdown_remote))
               if sat >= ch.local.dust_limit_sat]
    outputs.sort(key=lambda o: (o.amount_sat, msgpack.packb(o.cond, use_bin_type=True)))
    return Tx([TxIn(ch.funding_outpoint.txid, ch.funding_outpoint.vout, CLOSING_SEQUENCE)],
              outputs, 0)


class Closing:
    """Close flows of the node's channel manager."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.manager = node.channels

    def estimate_fee(self, ch: Channel) -> int:
        draft = closing_tx(ch, 0)
        return -(-(draft.size + 180) * CLOSE_FEERATE_SAT_PER_KB // 1000)

    async def close(self, ch: Channel) -> None:
        """Start a cooperative close (BOLT 2 shutdown)."""
        if ch.state not in (ChannelState.OPEN, ChannelState.AWAITING_LOCKIN):
            raise BadRequest(f"channel is {ch.state.name}; only an open channel closes "
                             "cooperatively (use force)")
        await self._send_shutdown(ch)
        await self.node.gossip.channel_closed(ch)
        await self.maybe_negotiate(ch)

    async def _send_shutdown(self, ch: Channel) -> None:
        if ch.shutdown_local is None:
            ch.shutdown_local = policy.pk(self.node.wallet.key(0))
        if ch.state in (ChannelState.OPEN, ChannelState.AWAITING_LOCKIN):
            ch.sm.set_state(ChannelState.SHUTDOWN)
        self.manager.save(ch)
        await self.manager.send(ch, "shutdown", {"channel_id": ch.cid,
                                                 "scriptpubkey": ch.shutdown_local})

    async def on_shutdown(self, ch: Channel, body: dict[str, Any]) -> None:
        try:
            policy.check_policy(body["scriptpubkey"])
        except DecodeError as exc:
            raise ProtocolViolation(f"shutdown destination is not a valid policy: {exc}") \
                from None
        if ch.state not in (ChannelState.OPEN, ChannelState.AWAITING_LOCKIN,
                            ChannelState.SHUTDOWN):
            raise ProtocolViolation(f"shutdown while {ch.state.name}")
        ch.shutdown_remote = body["scriptpubkey"]
        if ch.shutdown_local is None:
            await self._send_shutdown(ch)
        self.manager.save(ch)
        await self.maybe_negotiate(ch)

    def _quiet(self, ch: Channel) -> bool:
        led = ch.ledger
        return not (led.htlcs(Side.LOCAL) or led.htlcs(Side.REMOTE) or led.awaiting_revoke()
                    or led.has_changes_to_sign(Side.REMOTE)
                    or led.has_changes_to_sign(Side.LOCAL))

    async def maybe_negotiate(self, ch: Channel) -> None:
        """Once both shut down and nothing is in flight, the opener proposes a fee."""
        if ch.state != ChannelState.SHUTDOWN or ch.shutdown_local is None or \
                ch.shutdown_remote is None or not self._quiet(ch):
            return
        ch.sm.set_state(ChannelState.NEGOTIATING)
        self.manager.save(ch)
        if ch.local_is_opener:
            await self.propose_estimate(ch)

    async def propose_estimate(self, ch: Channel) -> None:
        """The opener (re)starts fee negotiation with its own estimate."""
        await self._propose(ch, self.estimate_fee(ch))

    async def _propose(self, ch: Channel, fee_sat: int) -> None:
        tx = closing_tx(ch, fee_sat)
        sig = tx.sign_input(0, ch.secrets.funding_privkey, ch.funding_sat, ch.funding_cond)
        ch.closing_tx = {"fee_sat": fee_sat, "sig": sig}
        self.manager.save(ch)
        await self.manager.send(ch, "closing_signed", {"channel_id": ch.cid,
                                                       "fee_satoshis": fee_sat, "signature": sig})

    async def on_closing_signed(self, ch: Channel, body: dict[str, Any]) -> None:
        if ch.state == ChannelState.SHUTDOWN:
            await self.maybe_negotiate(ch)
        if ch.state != ChannelState.NEGOTIATING:
            raise ProtocolViolation(f"closing_signed while {ch.state.name}")
        fee = body["fee_satoshis"]
        opener_sat = ch.ledger.balance_msat(Side.LOCAL if ch.local_is_opener else Side.REMOTE,
                                            Side.LOCAL) // 1000
        if fee > opener_sat:
            raise ProtocolViolation(f"closing fee {fee} sat exceeds the opener's balance")
        tx = closing_tx(ch, fee)
        if not policy.verify(ch.remote.basepoints.funding_pubkey,
                             sighash(tx, 0, ch.funding_sat, ch.funding_cond), body["signature"]):
            raise ProtocolViolation("bad closing_signed signature")
        ours = self.estimate_fee(ch)
        agreed = (ch.closing_tx or {}).get("fee_sat") == fee or ours // 2 <= fee <= ours * 2
        if not agreed:
            await self._propose(ch, (fee + ours) // 2)
            return
        if (ch.closing_tx or {}).get("fee_sat") != fee:
            await self._propose(ch, fee)
        sig = ch.closing_tx["sig"]
        tx.witnesses = [cm.funding_witness(ch.local.basepoints.funding_pubkey, sig,
                                           ch.remote.basepoints.funding_pubkey, body["signature"])]
        ch.closing_tx.update(txid=tx.txid, tx=tx.to_wire())
        ch.sm.set_state(ChannelState.CLOSING)
        self.manager.save(ch)
        self.node.events.emit("channel_closing", channel_id=ch.cid, kind="mutual", txid=tx.txid,
                              fee_sat=fee)
        await self.node.broadcaster.add(tx, "mutual close", ch.cid)

    async def force_close(self, ch: Channel, reason: str) -> None:
        """Broadcast our latest commitment; the resolver sweeps what is ours. After a
        data loss our latest is stale (revoked, for all we know): broadcasting it would
        hand the peer everything, so we only wait for the peer's commitment instead
        (BOLT 2, option_data_loss_protect)."""
        if ch.local_sigs is None:
            raise BadRequest("nothing to close on chain: the channel was never funded")
        if ch.onchain.get("data_loss"):
            if ch.state != ChannelState.FORCE_CLOSING:
                await self.node.gossip.channel_closed(ch)
                ch.sm.set_state(ChannelState.FORCE_CLOSING)
                ch.onchain.setdefault("reason", reason)
                self.manager.save(ch)
            self.node.log.warning("channel %s: not broadcasting our commitment after a data "
                                  "loss (%s); waiting for the peer's", ch.cid.hex()[:16], reason)
            self.node.events.emit("channel_closing", channel_id=ch.cid, kind="await_remote",
                                  reason=reason)
            return
        tx = ch.signed_local_commitment()
        await self.node.gossip.channel_closed(ch)
        ch.sm.set_state(ChannelState.FORCE_CLOSING)
        ch.onchain.setdefault("reason", reason)
        ch.onchain["broadcast_sigs"] = list(ch.local_sigs)  # the HTLC sigs of what we sent
        self.manager.save(ch)
        self.node.events.emit("channel_closing", channel_id=ch.cid, kind="force", txid=tx.txid,
                              reason=reason)
        await self.node.broadcaster.add(tx, "force close", ch.cid)
