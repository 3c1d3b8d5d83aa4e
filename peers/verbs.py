"""Channel and payment verbs of the peer's control RPC (Core Lightning names)."""
from __future__ import annotations

from typing import Any

from emulator.errors import BadRequest
from peers import crashpoints
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_types import Side


def receivable_msat(ch: Channel) -> int:
    """What the peer can pay us on ``ch`` now: its balance less our reserve, its pending
    HTLCs and (if it opened) the fee of one more HTLC."""
    from peers import commitment as cm
    led = ch.ledger
    ctn = led.ctn_latest(Side.LOCAL)
    pending = sum(h.amount_msat for s, h in led.htlcs_pending(Side.LOCAL) if s == Side.REMOTE)
    fee_msat = 0 if ch.local_is_opener else 1000 * cm.commitment_fee_sat(
        led.feerate(Side.LOCAL, ctn), len(led.htlcs(Side.LOCAL, ctn)) + 1)
    return max(0, led.balance_msat(Side.REMOTE, Side.LOCAL, ctn) - pending - fee_msat
               - 1000 * ch.local.channel_reserve_sat)


def channel_summary(ch: Channel) -> dict[str, Any]:
    """What ``listchannels`` shows of one channel."""
    info: dict[str, Any] = {
        "channel_id": ch.cid, "peer_id": ch.peer_id, "state": ch.state.name,
        "opener": "local" if ch.local_is_opener else "remote", "capacity_sat": ch.funding_sat,
        "short_channel_id": ch.short_channel_id,
        "funding_txid": ch.funding_outpoint.txid if ch.funding_outpoint else None}
    if ch.ledger is None:
        return info
    led = ch.ledger
    local_ctn = led.ctn_latest(Side.LOCAL)
    htlcs = led.htlcs(Side.LOCAL, local_ctn)
    info.update(
        local_msat=led.balance_msat(Side.LOCAL, Side.LOCAL, local_ctn),
        remote_msat=led.balance_msat(Side.REMOTE, Side.LOCAL, local_ctn),
        local_reserve_sat=ch.remote.channel_reserve_sat if ch.remote else None,
        remote_reserve_sat=ch.local.channel_reserve_sat,
        htlcs=[{"direction": "out" if side == Side.LOCAL else "in", "id": h.htlc_id,
                "amount_msat": h.amount_msat, "payment_hash": h.payment_hash,
                "cltv_expiry": h.cltv_expiry} for side, h in htlcs],
        in_flight_msat=sum(h.amount_msat for _, h in htlcs),
        commitment_number=local_ctn, remote_commitment_number=led.ctn_latest(Side.REMOTE),
        feerate_per_kw=led.feerate(Side.LOCAL, local_ctn),
        quiescent=not (htlcs or led.htlcs(Side.REMOTE) or led.awaiting_revoke()
                       or led.has_changes_to_sign(Side.LOCAL)
                       or led.has_changes_to_sign(Side.REMOTE)))
    if ch.onchain:
        info["onchain"] = {k: v for k, v in ch.onchain.items() if k != "revocation_secret"}
    return info


class ChannelVerbs:
    """Mixed into the peer service; ``self`` is the PeerService."""

    async def rpc_fundchannel(self, node_id: Any, amount_sat: int, push_msat: int = 0,
                              announce: bool = True) -> dict[str, Any]:
        """Open a channel of amount_sat to a connected peer (optionally pushing push_msat;
        announce=False keeps it private)."""
        from peers.node import pubkey_arg
        ch = await self.opening.fundchannel(pubkey_arg(node_id, "node_id"), amount_sat,
                                            push_msat, announce)
        return {"channel_id": ch.cid, "funding_txid": ch.funding_outpoint.txid,
                "state": ch.state.name}

    async def rpc_listchannels(self) -> list[dict[str, Any]]:
        """Every channel: balances (msat), reserves, HTLCs in flight, state."""
        return [channel_summary(ch) for ch in self.channels.channels.values()
                if ch.state != ChannelState.ABORTED]

    async def rpc_close(self, channel_id: Any, force: bool = False) -> dict[str, Any]:
        """Close a channel cooperatively, or with force=True by broadcasting our commitment."""
        ch = self.channels.get(channel_id)
        if force:
            await self.closing.force_close(ch, "requested by the operator")
        else:
            await self.closing.close(ch)
        return {"channel_id": ch.cid, "state": ch.state.name}

    async def rpc_invoice(self, amount_msat: int | None = None, description: str = "",
                          expiry: int = 3600) -> dict[str, Any]:
        """Create a BOLT 11 invoice (amount_msat omitted: any amount)."""
        return self.payments.create_invoice(amount_msat, description, expiry)

    async def rpc_pay(self, bolt11: str, amount_msat: int | None = None,
                      timeout: float = 60.0, wait: bool = True) -> dict[str, Any]:
        """Pay a BOLT 11 invoice; returns the preimage or fails with the reason
        (wait=False returns once the HTLC is offered)."""
        if not isinstance(bolt11, str):
            raise BadRequest("bolt11 must be a string")
        return await self.payments.pay(bolt11, amount_msat, timeout, wait)

    async def rpc_dev_hold(self, hold: bool = True) -> dict[str, Any]:
        """Dev/chaos: hold incoming HTLCs without settling or failing them (jamming)."""
        self.payments.hold = bool(hold)
        return {"hold": self.payments.hold, "held": len(self.payments.held)}

    async def rpc_dev_sendhtlc(self, node_id: Any, amount_msat: int,
                               payment_hash: Any = None) -> dict[str, Any]:
        """Dev: send an HTLC for a payment hash (random if omitted) that no invoice backs."""
        import os

        from peers.node import pubkey_arg
        from peers.paying import Request
        digest = bytes.fromhex(payment_hash) if isinstance(payment_hash, str) else \
            payment_hash or os.urandom(32)
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise BadRequest("payment_hash must be 32 bytes")
        req = Request(pubkey_arg(node_id, "node_id"), digest, amount_msat,
                      self.config.timers.min_final_cltv_expiry_delta)
        return await self.payments.start(req, 60.0, wait=False, kind="dev")

    async def rpc_dev_sendpart(self, bolt11: str, amount_msat: int) -> dict[str, Any]:
        """Dev: send one part of an invoice's amount as if more parts were to follow
        (the payee should hold it, then fail it with mpp_timeout)."""
        from emulator.crypto import bolt11 as b11
        from peers.paying import Request
        inv = b11.decode(bolt11)
        req = Request(inv.payee, inv.payment_hash, amount_msat, inv.min_final_cltv_expiry_delta,
                      inv.payment_secret, total_msat=inv.amount_msat)
        return await self.payments.start(req, 60.0, wait=False, kind="dev")

    async def rpc_keysend(self, node_id: Any, amount_msat: int, timeout: float = 60.0,
                          wait: bool = True) -> dict[str, Any]:
        """Pay a node without an invoice (bLIP-3 keysend)."""
        from peers.node import pubkey_arg
        return await self.payments.keysend(pubkey_arg(node_id, "node_id"), amount_msat,
                                           timeout=timeout, wait=wait)

    async def rpc_sendmessage(self, node_id: Any, text: str, amount_msat: int = 1000,
                              timeout: float = 60.0, wait: bool = True) -> dict[str, Any]:
        """Send a text message riding a small keysend payment (WhatSat records)."""
        from peers.node import pubkey_arg
        return await self.messages.send(pubkey_arg(node_id, "node_id"), text, amount_msat,
                                        timeout, wait)

    async def rpc_inbox(self) -> list[dict[str, Any]]:
        """Messages received: verified sender, time, text and the amount that carried it."""
        return self.messages.inbox()

    async def rpc_rebalance(self, out_channel: Any, in_channel: Any, amount_msat: int,
                            timeout: float = 60.0) -> dict[str, Any]:
        """Move amount_msat of outbound liquidity from out_channel to in_channel with a
        circular payment to ourselves (we pay the fees of the hops in between)."""
        from peers.paying import Request
        out_ch, in_ch = self.channels.check_open(out_channel), self.channels.check_open(
            in_channel)
        if out_ch.cid == in_ch.cid:
            raise BadRequest("rebalance needs two different channels")
        if type(amount_msat) is not int or amount_msat <= 0:
            raise BadRequest(f"amount_msat must be a positive int, got {amount_msat!r}")
        inv = self.payments.create_invoice(amount_msat, "rebalance", 600)
        req = Request(self.node_id, inv["payment_hash"], amount_msat,
                      self.config.timers.min_final_cltv_expiry_delta, inv["payment_secret"],
                      via=(out_ch.short_channel_id, in_ch.short_channel_id))
        return await self.payments.start(req, timeout, True, kind="rebalance")

    async def rpc_liquidity(self) -> dict[str, Any]:
        """Per channel and in total: outbound (what we can pay) and inbound (can be paid)."""
        from peers.paying import spendable_msat
        rows = []
        for ch in self.channels.channels.values():
            if ch.state != ChannelState.OPEN:
                continue
            inbound = receivable_msat(ch)
            rows.append({"channel_id": ch.cid, "peer_id": ch.peer_id,
                         "short_channel_id": ch.short_channel_id,
                         "capacity_sat": ch.funding_sat, "outbound_msat": spendable_msat(ch),
                         "inbound_msat": inbound})
        return {"channels": rows, "outbound_msat": sum(r["outbound_msat"] for r in rows),
                "inbound_msat": sum(r["inbound_msat"] for r in rows)}

    async def rpc_dev_linkfaults(self, node_id: Any, seed: int = 0, delay_ms: float = 0,
                                 jitter_ms: float = 0, loss: float = 0, duplicate: float = 0,
                                 reorder: float = 0, partitioned: bool = False
                                 ) -> dict[str, Any]:
        """Chaos: faults on our link towards a peer (delay, jitter, loss, duplicate,
        reorder, partition), drawn from the seed; dev_heal removes them."""
        from peers.node import pubkey_arg
        peer = pubkey_arg(node_id, "node_id")
        fault = self.links.faults.set(peer, seed, delay_ms, jitter_ms, loss, duplicate,
                                      reorder, partitioned)
        self.events.emit("fault_link", peer=peer, **fault.to_wire())
        return fault.to_wire()

    async def rpc_dev_heal(self, node_id: Any = None) -> bool:
        """Chaos: remove link faults towards a peer (or all peers)."""
        from peers.node import pubkey_arg
        self.links.faults.heal(pubkey_arg(node_id, "node_id") if node_id else None)
        self.events.emit("fault_healed", peer=node_id or b"")
        return True

    async def rpc_dev_gossip_flood(self, count: int = 200) -> int:
        """Chaos: flood every connected peer with bogus (badly signed) channel_updates."""
        import os
        if type(count) is not int or not 0 < count <= 100_000:
            raise BadRequest("count must be from 1 to 100000")
        sent = 0
        for peer_id, link in list(self.links.links.items()):
            if not link.connected:
                continue
            for i in range(count):
                body = {"signature": os.urandom(64), "chain_hash": b"\x06" * 32,
                        "short_channel_id": (i + 1) << 40, "timestamp": 1 + i,
                        "message_flags": 1, "channel_flags": 0, "cltv_expiry_delta": 40,
                        "htlc_minimum_msat": 1, "fee_base_msat": 1,
                        "fee_proportional_millionths": 1, "htlc_maximum_msat": 1000}
                await self.links.send(peer_id, "channel_update", body)
                sent += 1
        self.events.emit("fault_gossip_flood", sent=sent)
        return sent

    async def rpc_dev_plant_bug(self, name: str = "sign_before_persist") -> str:
        """Dev: switch on a known bug (sign_before_persist: send commitment_signed before
        the state is on disk) so a test can show the checker catches it."""
        if name not in ("sign_before_persist", ""):
            raise BadRequest(f"unknown bug {name!r}; known: sign_before_persist")
        self.channels.planted_bug = name
        return name

    async def rpc_dev_delay_reestablish(self, seconds: float = 0.0) -> float:
        """Dev: wait ``seconds`` before handling a peer's channel_reestablish (a slow
        peer: updates it makes meanwhile are held until then)."""
        if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
            raise BadRequest("seconds must be from 0 to 60")
        self.reestablish.delay_s = float(seconds)
        return self.reestablish.delay_s

    async def rpc_dev_withhold_revoke(self, withhold: bool = True) -> bool:
        """Dev/chaos: stop sending revoke_and_ack (a byzantine peer)."""
        self.channels.withhold_revoke = bool(withhold)
        return self.channels.withhold_revoke

    async def rpc_dev_sendraw(self, node_id: Any, type: str, body: dict) -> bool:
        """Dev: send any schema-valid message in the session (for protocol-violation tests)."""
        from peers.node import pubkey_arg
        await self.links.send(pubkey_arg(node_id, "node_id"), type, body)
        return True

    async def rpc_listgraph(self) -> dict[str, Any]:
        """Our view of the network: nodes and channels with both directions' policies."""
        return self.gossip.graph.summary()

    async def rpc_listinvoices(self) -> list[dict[str, Any]]:
        """Invoices with their status."""
        return self.payments.list_invoices()

    async def rpc_listpayments(self) -> list[dict[str, Any]]:
        """Outgoing payments with status, fee and attempts."""
        return self.payments.list_payments()

    async def rpc_cheat(self, channel_id: Any, commitment_number: int | None = None
                        ) -> dict[str, Any]:
        """Dev/chaos: broadcast one of our revoked commitments (the peer should punish)."""
        ch = self.channels.get(channel_id)
        old = ch.revoked_local(commitment_number)
        self.events.emit("cheat", channel_id=ch.cid, commitment_number=old[0], txid=old[1].txid)
        await self.chain.call("submittx", tx=old[1].to_wire())
        return {"channel_id": ch.cid, "commitment_number": old[0], "txid": old[1].txid}

    async def rpc_dev_crashat(self, point: str | None = None) -> str | None:
        """Dev: exit at a crash point such as before_send:commitment_signed[:N]."""
        try:
            crashpoints.set_target(point)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return point
