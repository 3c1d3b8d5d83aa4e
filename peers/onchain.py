"""On-chain resolution: what to do when a channel's funding output is spent.

Every block is checked for spends of our channels' funding outputs and of the
outputs we still wait on. A spend is one of: the mutual close; our commitment
(sweep ``to_local`` after the delay, time out our HTLCs, claim theirs with
preimages, each through BOLT 3's second-stage transactions); the peer's current
commitment (sweep ``to_remote``, reclaim expired HTLCs, claim with preimages);
or a revoked commitment of the peer's — punished with one justice transaction
that sweeps every output through its revocation branch, and again for any
second-stage HTLC transaction the cheater gets in first.
"""
from __future__ import annotations

from typing import Any

from emulator import policy
from emulator.crypto import shachain
from emulator.crypto.keys import per_commitment_point
from emulator.errors import LnemuError
from emulator.tx import OutPoint, Tx
from peers import commitment as cm
from peers import sweeps
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_types import Side

SWEEP_FEERATE = 1000
JUSTICE_FEERATE = 5000  # outbid anything the cheater puts in the mempool


class OnchainResolver:
    """Watches funding outputs and resolves closed channels."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.manager = node.channels

    @property
    def dest(self) -> list:
        return policy.pk(self.node.wallet.key(0))

    def _learn_invoice_preimages(self, ch: Channel) -> None:
        """HTLCs paying our invoices may be claimed on chain even if held off chain, but
        only when that HTLC alone pays the invoice or we already decided to settle:
        never reveal the preimage for a part of an incomplete multi-part payment, nor
        for an HTLC we already failed off chain (its payer was told it failed)."""
        for offerer, htlc in ch.ledger.htlcs(Side.LOCAL):
            if offerer != Side.REMOTE:
                continue
            invoice = self.node.store.get("invoices", htlc.payment_hash)
            if invoice is None or invoice.get("keysend"):
                continue
            settling = invoice["status"] in ("settling", "paid")
            whole = invoice["amount_msat"] is None or htlc.amount_msat >= invoice["amount_msat"]
            if settling or (whole and htlc.htlc_id not in ch.sent_fails):
                ch.preimages.setdefault(htlc.payment_hash, invoice["preimage"])

    async def on_block(self, height: int, txs: list[Tx]) -> None:
        for ch in list(self.manager.channels.values()):
            if ch.funding_outpoint is None or ch.state in (ChannelState.CLOSED,
                                                           ChannelState.ABORTED):
                continue
            for tx in txs:
                spent = {i.outpoint for i in tx.inputs}
                if ch.funding_outpoint in spent and not ch.onchain.get("commitment_txid"):
                    await self._funding_spent(ch, tx, height)
                elif ch.onchain.get("watch"):
                    await self._watched_spent(ch, tx, spent)
            self._maybe_closed(ch)

    async def _funding_spent(self, ch: Channel, tx: Tx, height: int) -> None:
        ch.onchain.update(commitment_txid=tx.txid, height=height, watch=[])
        if tx.inputs[0].sequence == 0xFFFFFFFF:
            ch.onchain["kind"] = "mutual"
            if ch.state != ChannelState.CLOSING:
                ch.sm.set_state(ChannelState.FORCE_CLOSING) if ch.sm.can_move(
                    ChannelState.FORCE_CLOSING) else None
        else:
            await self._commitment_spent(ch, tx)
        self.manager.save(ch)
        self.node.events.emit("funding_spent", channel_id=ch.cid, txid=tx.txid,
                              kind=ch.onchain["kind"])

    async def _commitment_spent(self, ch: Channel, tx: Tx) -> None:
        self._learn_invoice_preimages(ch)
        try:
            n = cm.commitment_number_from_tx(tx, ch.obscuring_factor)
        except LnemuError:
            ch.onchain["kind"] = "unknown"
            return
        if ch.sm.can_move(ChannelState.FORCE_CLOSING):
            ch.sm.set_state(ChannelState.FORCE_CLOSING)
        ch.onchain["ctn"] = n
        local_ctn = ch.ledger.ctn_latest(Side.LOCAL)
        if ch.ledger.ctn_floor(Side.LOCAL) <= n <= local_ctn and \
                ch.build(Side.LOCAL, n)[1].txid == tx.txid:
            ch.onchain["kind"] = "local"
            await self._resolve_local(ch, n, tx)
        elif n >= ch.ledger.ctn_oldest_unrevoked(Side.REMOTE) and n in ch.remote_points:
            ch.onchain["kind"] = "remote"
            await self._resolve_remote(ch, n, tx)
        else:
            ch.onchain["kind"] = "revoked"
            await self._punish(ch, n, tx)

    # --- our commitment --------------------------------------------------------------
    async def _resolve_local(self, ch: Channel, n: int, tx: Tx) -> None:
        spec, built = ch.build(Side.LOCAL, n)
        point = spec.keys.per_commitment_point
        if built.to_local_vout is not None:
            cond = tx.outputs[built.to_local_vout].cond
            inp = sweeps.delayed_input(OutPoint(tx.txid, built.to_local_vout), built.to_local_sat,
                                       cond, ch.secrets.delayed_privkey(point), spec.to_self_delay)
            await self._sweep(ch, [inp], "to_local sweep")
        for out in built.htlc_outputs:
            self._watch(ch, tx.txid, out.vout)
        await self._claim_local_htlcs(ch, n, spec, built)

    def _remote_sigs(self, ch: Channel, n: int) -> list[bytes]:
        """The peer's HTLC signatures of our commitment ``n``, if we kept them."""
        for sigs in (ch.onchain.get("broadcast_sigs"), ch.local_sigs):
            if sigs and sigs[0] == n:
                return sigs[2]
        return []

    async def _claim_local_htlcs(self, ch: Channel, n: int, spec: Any, built: Any,
                                 only: bytes | None = None) -> None:
        """Our commitment ``n`` on chain: its HTLC-timeout txs, and an HTLC-success tx for
        each received HTLC whose preimage we know (``only``: just that payment hash's)."""
        remote_sigs = self._remote_sigs(ch, n)
        point = spec.keys.per_commitment_point
        for i, out in enumerate(built.htlc_outputs):
            if i >= len(remote_sigs) or (only is not None and (
                    out.offered or out.payment_hash != only)):
                continue
            second = cm.second_stage_tx(built, out, spec)
            local_sig = cm.sign_second_stage(second, out, ch.secrets.htlc_privkey(point))
            if out.offered:
                final = cm.finalize_htlc_timeout(second, spec.keys, local_sig, remote_sigs[i])
            elif out.payment_hash in ch.preimages:
                final = cm.finalize_htlc_success(second, spec.keys, local_sig, remote_sigs[i],
                                                 out.payment_hash, ch.preimages[out.payment_hash])
            else:
                continue  # no preimage (yet): the peer times it out unless we learn it
            await self.node.broadcaster.add(
                final, "htlc-timeout" if out.offered else "htlc-success", ch.cid,
                second_stage={"n": n, "amount_sat": final.outputs[0].amount_sat},
                payment_hash=out.payment_hash)

    async def claim_with_preimage(self, ch: Channel, payment_hash: bytes) -> None:
        """A preimage learned after ``ch``'s commitment went on chain (a forward settled
        downstream later): claim the HTLC output it unlocks before the peer can time it
        out (BOLT 5), as the commitment's resolution would have, had it been known."""
        n, txid = ch.onchain.get("ctn"), ch.onchain.get("commitment_txid")
        if n is None or txid is None or not any(w[0] == txid for w in ch.onchain.get(
                "watch", [])):
            return  # nothing there yet (its resolution will use the preimage), or all spent
        if ch.onchain.get("kind") == "local":
            spec, built = ch.build(Side.LOCAL, n)
            await self._claim_local_htlcs(ch, n, spec, built, only=payment_hash)
        elif ch.onchain.get("kind") == "remote":
            spec, built = ch.build(Side.REMOTE, n)
            await self._claim_remote_htlcs(ch, txid, spec, built, only=payment_hash)
        self.manager.save(ch)

    async def second_stage_confirmed(self, ch: Channel, item: dict[str, Any], tx: Tx) -> None:
        """Our HTLC-timeout/success tx confirmed: sweep its delayed output later."""
        spec = ch.spec(Side.LOCAL, item["second_stage"]["n"])
        out = tx.outputs[0]
        inp = sweeps.delayed_input(OutPoint(tx.txid, 0), out.amount_sat, out.cond,
                                   ch.secrets.delayed_privkey(spec.keys.per_commitment_point),
                                   spec.to_self_delay)
        await self._sweep(ch, [inp], "second-stage sweep")

    # --- their current commitment --------------------------------------------------
    async def _resolve_remote(self, ch: Channel, n: int, tx: Tx) -> None:
        spec, built = ch.build(Side.REMOTE, n)
        if built.to_remote_vout is not None:
            out = tx.outputs[built.to_remote_vout]
            inp = sweeps.to_remote_input(OutPoint(tx.txid, built.to_remote_vout), out.amount_sat,
                                         out.cond, ch.secrets.payment_privkey())
            await self._sweep(ch, [inp], "to_remote sweep")
        for out in built.htlc_outputs:
            self._watch(ch, tx.txid, out.vout)
        await self._claim_remote_htlcs(ch, tx.txid, spec, built)

    async def _claim_remote_htlcs(self, ch: Channel, txid: bytes, spec: Any, built: Any,
                                  only: bytes | None = None) -> None:
        """Their commitment on chain: reclaim what we offered after its expiry, claim
        what they offered whose preimage we know (``only``: just that payment hash's)."""
        htlc_priv = ch.secrets.htlc_privkey(spec.keys.per_commitment_point)
        for out in built.htlc_outputs:
            if only is not None and (not out.offered or out.payment_hash != only):
                continue
            op = OutPoint(txid, out.vout)
            if not out.offered:  # they received it: we offered, reclaim after expiry
                inp = sweeps.received_timeout_input(op, out.amount_sat, out.cond, htlc_priv,
                                                    out.cltv_expiry)
                await self._sweep(ch, [inp], "htlc-timeout claim", payment_hash=out.payment_hash)
            elif out.payment_hash in ch.preimages:  # they offered, we know the preimage
                inp = sweeps.offered_preimage_input(op, out.amount_sat, out.cond, htlc_priv,
                                                    out.payment_hash,
                                                    ch.preimages[out.payment_hash])
                await self._sweep(ch, [inp], "htlc claim", payment_hash=out.payment_hash)

    # --- a revoked commitment: the penalty ---------------------------------------------
    async def _punish(self, ch: Channel, n: int, tx: Tx) -> None:
        await self._sweep_our_to_remote(ch, tx)
        try:
            secret = ch.revocations.get(shachain.index_for_commitment(n))
        except shachain.ShachainError:
            # newer than anything we know: we lost data; to_remote (above) is all we can take
            self.node.log.warning("commitment %d on chain is newer than our state", n)
            ch.onchain["kind"] = "future"
            return
        point = per_commitment_point(secret)
        keys = cm.commitment_keys(point, ch.remote.basepoints, ch.local.basepoints)
        ch.onchain.update(revocation_secret=secret, revocation_pubkey=keys.revocation_pubkey)
        self.node.events.emit("breach_detected", channel_id=ch.cid, ctn=n, txid=tx.txid)
        await self._justice(ch, tx)

    async def _sweep_our_to_remote(self, ch: Channel, tx: Tx) -> None:
        """Our untweaked to_remote output (option_static_remotekey) on their commitment."""
        mine = policy.pk(ch.local.basepoints.payment_basepoint)
        for vout, out in enumerate(tx.outputs):
            if out.cond == mine:
                inp = sweeps.to_remote_input(OutPoint(tx.txid, vout), out.amount_sat, out.cond,
                                             ch.secrets.payment_privkey())
                await self._sweep(ch, [inp], "to_remote sweep")

    async def _justice(self, ch: Channel, tx: Tx) -> None:
        outputs = sweeps.revocable_outputs(tx, ch.onchain["revocation_pubkey"])
        if not outputs:
            return
        for vout, _, _ in outputs:
            self._watch(ch, tx.txid, vout)
        rev_priv = ch.secrets.revocation_privkey(ch.onchain["revocation_secret"])
        justice = sweeps.justice_tx(tx, outputs, rev_priv, self.dest, JUSTICE_FEERATE)
        self.node.events.emit("justice", channel_id=ch.cid, txid=justice.txid,
                              breach_txid=tx.txid,
                              swept_sat=sum(amount for _, amount, _ in outputs))
        await self.node.broadcaster.add(justice, "justice", ch.cid)

    # --- following what we watch ---------------------------------------------------------
    def _watch(self, ch: Channel, txid: bytes, vout: int) -> None:
        ch.onchain.setdefault("watch", []).append([txid, vout])

    async def _watched_spent(self, ch: Channel, tx: Tx, spent: set[OutPoint]) -> None:
        watch = ch.onchain["watch"]
        hit = [w for w in watch if OutPoint(w[0], w[1]) in spent]
        if not hit:
            return
        ch.onchain["watch"] = [w for w in watch if w not in hit]
        for witness in tx.witnesses:
            for payment_hash, preimage in witness.preimages.items():
                if payment_hash not in ch.preimages:
                    ch.preimages[payment_hash] = preimage
                    await self.node.payments.on_preimage_onchain(payment_hash, preimage)
                    await self.node.forwarder.on_preimage_onchain(payment_hash, preimage)
        if ch.onchain.get("kind") == "revoked" and tx.txid not in self._ours(ch):
            await self._justice(ch, tx)  # a second-stage tx of the cheater's: sweep it too
        self.manager.save(ch)

    def _ours(self, ch: Channel) -> set[bytes]:
        return {item["txid"] for item in self.node.broadcaster.for_channel(ch.cid)}

    async def _sweep(self, ch: Channel, inputs: list[sweeps.SweepInput], purpose: str,
                     **extra: Any) -> None:
        try:
            tx = sweeps.sweep_tx(inputs, self.dest, SWEEP_FEERATE)
        except sweeps.SweepError as exc:
            self.node.log.info("channel %s: %s skipped: %s", ch.cid.hex()[:16], purpose, exc)
            return
        await self.node.broadcaster.add(tx, purpose, ch.cid, **extra)

    def _maybe_closed(self, ch: Channel) -> None:
        if not ch.onchain.get("commitment_txid") or ch.state == ChannelState.CLOSED:
            return
        if ch.onchain.get("watch") or self.node.broadcaster.for_channel(ch.cid):
            return
        if ch.sm.can_move(ChannelState.CLOSED):
            ch.sm.set_state(ChannelState.CLOSED)
            self.manager.save(ch)
            self.node.events.emit("channel_closed", channel_id=ch.cid,
                                  kind=ch.onchain.get("kind"))
