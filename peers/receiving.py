"""Receiving as the final hop: invoices, keysend, text messages and multi-part payments.

An HTLC is settled only when it is irrevocably committed and matches: an unpaid
invoice (secret, amount, expiry, CLTV), or a keysend whose onion carries the
preimage. Parts of a multi-part payment are held until their sum reaches the
``total_msat`` the payer announced, then all settle together; if the rest does not
arrive within the MPP timeout, every part fails back with ``mpp_timeout``.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from emulator.crypto import sphinx, tlv
from emulator.crypto.failures import FailureCode
from peers.channel import Channel
from peers.htlc_types import Htlc, Side
from peers.onion_payloads import HopPayload, failure_message, unknown_payment_details

MPP_TIMEOUT_S = 60.0
TEST_MPP_TIMEOUT_S = 5.0


@dataclass
class PartSet:
    """Parts of one multi-part payment held until complete."""

    total_msat: int
    parts: list[tuple[Channel, Htlc, bytes]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def received_msat(self) -> int:
        return sum(h.amount_msat for _, h, _ in self.parts)


class Receiver:
    """Final-hop logic of the node."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store = node.store
        self.held: dict[bytes, PartSet] = {}
        # payment hash -> [[channel id, htlc id], ...] of invoices not yet paid for good
        self.settling: dict[bytes, list] = dict(self.store.items("settling"))
        legacy = self.store.value("settling")  # an older store keeps one map in kv
        if legacy is not None:
            for payment_hash, parts in legacy.items():
                self._track(payment_hash, parts)
            self.store.delete("kv", "settling")
        fast = node.config.timers.ping_interval < 10
        self.mpp_timeout_s = TEST_MPP_TIMEOUT_S if fast else MPP_TIMEOUT_S

    async def on_final_htlc(self, ch: Channel, htlc: Htlc, payload: HopPayload,
                            secret: bytes) -> None:
        """Settle, hold (MPP) or fail an HTLC that ends here."""
        height = await self.node.chain_height()  # first: nothing read below goes stale
        records = payload.records
        invoice = self.store.get("invoices", htlc.payment_hash)
        if invoice is not None and [ch.cid, htlc.htlc_id] in invoice.get("settle_htlcs", []):
            # we settled this very HTLC before (the settle was lost to a reconnect or a
            # restart): a revealed preimage can only be settled again, never failed
            await self.node.channels.fulfill_htlc(ch, htlc, invoice["preimage"])
            return
        if invoice is None and tlv.KEYSEND_PREIMAGE in records:
            await self._keysend(ch, htlc, payload, secret, records, height)
            return
        problem = self._check(htlc, payload, invoice, height)
        if problem is not None:
            await self._fail(ch, htlc, secret, problem)
            return
        total = payload.total_msat or htlc.amount_msat
        parts = self.held.setdefault(htlc.payment_hash, PartSet(total))
        parts.parts.append((ch, htlc, secret))
        if parts.received_msat >= total:
            await self._settle_all(htlc.payment_hash, invoice)
        elif parts.timer is None:
            loop = asyncio.get_running_loop()
            parts.timer = loop.call_later(self.mpp_timeout_s, lambda: self.node.spawn(
                self._expire(htlc.payment_hash), "mpp-timeout"))
            self.node.events.emit("mpp_part_held", payment_hash=htlc.payment_hash,
                                  received_msat=parts.received_msat, total_msat=total)

    def _check(self, htlc: Htlc, payload: HopPayload, invoice: dict | None,
               height: int) -> bytes | None:
        """BOLT 4 final-node checks at chain height ``height``; the failure message, or
        None when all is well."""
        unknown = unknown_payment_details(htlc.amount_msat, height)
        if invoice is None or invoice["status"] in ("paid", "settling"):
            return unknown
        if payload.payment_secret != invoice["secret"]:
            return unknown
        total = payload.total_msat or htlc.amount_msat
        if invoice["amount_msat"] and not invoice["amount_msat"] <= total <= \
                2 * invoice["amount_msat"]:
            return unknown
        if htlc.amount_msat < payload.amt_to_forward:
            return failure_message(FailureCode.FINAL_INCORRECT_HTLC_AMOUNT,
                                   htlc.amount_msat.to_bytes(8, "big"))
        problem = self._cltv_problem(htlc, payload, height)
        if problem is not None:
            return problem
        if time.time() > invoice["expires_at"]:
            return unknown
        return None

    def _cltv_problem(self, htlc: Htlc, payload: HopPayload, height: int) -> bytes | None:
        """BOLT 4's final-node CLTV checks: the expiry is the onion's, and far enough
        ahead of ``height`` for us to settle before the payer can time the HTLC out."""
        if htlc.cltv_expiry < payload.outgoing_cltv_value:
            return failure_message(FailureCode.FINAL_INCORRECT_CLTV_EXPIRY,
                                   htlc.cltv_expiry.to_bytes(4, "big"))
        if htlc.cltv_expiry < height + self.node.config.timers.min_final_cltv_expiry_delta:
            return unknown_payment_details(htlc.amount_msat, height)
        return None

    async def _settle_all(self, payment_hash: bytes, invoice: dict[str, Any]) -> None:
        parts = self.held.pop(payment_hash)
        if parts.timer is not None:
            parts.timer.cancel()
        for ch, htlc, _ in parts.parts:
            await self.node.channels.fulfill_htlc(ch, htlc, invoice["preimage"])
        # "settling" until our fulfills are irrevocably committed (or claimed on chain):
        # a payee that reveals the preimage and then vanishes past the HTLCs' expiry
        # can still lose the money to the payer's timeout
        invoice.update(status="settling", received_msat=parts.received_msat,
                       parts=len(parts.parts),
                       settle_htlcs=[[ch.cid, htlc.htlc_id] for ch, htlc, _ in parts.parts])
        self.store.put("invoices", payment_hash, invoice)
        self._track(payment_hash, invoice["settle_htlcs"])
        self.node.events.emit("invoice_settling", payment_hash=payment_hash,
                              amount_msat=parts.received_msat, parts=len(parts.parts))

    async def on_block(self, height: int) -> None:
        """Give up held parts before their deadline: failing them off chain beats
        letting the payer's timeout force the channel onto the chain."""
        margin = self.node.config.timers.htlc_deadline_blocks + 2
        for payment_hash, parts in list(self.held.items()):
            if any(h.cltv_expiry - margin <= height for _, h, _ in parts.parts):
                await self._expire(payment_hash)

    async def _expire(self, payment_hash: bytes) -> None:
        parts = self.held.pop(payment_hash, None)
        if parts is None:
            return
        self.node.events.emit("mpp_timeout", payment_hash=payment_hash,
                              received_msat=parts.received_msat, total_msat=parts.total_msat)
        for ch, htlc, secret in parts.parts:
            await self._fail(ch, htlc, secret, failure_message(FailureCode.MPP_TIMEOUT))

    async def _keysend(self, ch: Channel, htlc: Htlc, payload: HopPayload, secret: bytes,
                       records: dict[int, bytes], height: int) -> None:
        preimage = records[tlv.KEYSEND_PREIMAGE]
        if hashlib.sha256(preimage).digest() != htlc.payment_hash or \
                htlc.amount_msat < payload.amt_to_forward:
            await self._fail(ch, htlc, secret, unknown_payment_details(htlc.amount_msat,
                                                                      height))
            return
        problem = self._cltv_problem(htlc, payload, height)
        if problem is not None:  # settled, it could be timed out under us on chain
            await self._fail(ch, htlc, secret, problem)
            return
        message = self.node.messages.accept(htlc, records) if tlv.TEXT_MESSAGE in records \
            else None
        record = {"payment_hash": htlc.payment_hash, "preimage": preimage, "secret": b"",
                  "amount_msat": None, "description": "keysend", "bolt11": "",
                  "status": "settling", "created": time.time(), "expires_at": 0,
                  "received_msat": htlc.amount_msat, "paid_at": None, "keysend": True,
                  "settle_htlcs": [[ch.cid, htlc.htlc_id]]}
        self.store.put("invoices", htlc.payment_hash, record)
        self._track(htlc.payment_hash, record["settle_htlcs"])
        await self.node.channels.fulfill_htlc(ch, htlc, preimage)
        self.node.events.emit("keysend_received", payment_hash=htlc.payment_hash,
                              amount_msat=htlc.amount_msat, message=message is not None)

    def check_settled(self, ch: Channel) -> None:
        """Invoices whose settling HTLCs on ``ch`` left both commitments are paid."""
        mine = [(payment_hash, [hid for cid, hid in parts if cid == ch.cid])
                for payment_hash, parts in self.settling.items()]
        mine = [(payment_hash, ours) for payment_hash, ours in mine if ours]
        if not mine:
            return
        live = {h.htlc_id for side in (Side.LOCAL, Side.REMOTE)
                for offerer, h in ch.ledger.htlcs(side) if offerer == Side.REMOTE}
        for payment_hash, ours in mine:
            if all(hid not in live for hid in ours):
                self.mark_paid(payment_hash)

    def _track(self, payment_hash: bytes, parts: list) -> None:
        self.settling[payment_hash] = parts
        self.store.put("settling", payment_hash, parts)

    def mark_paid(self, payment_hash: bytes) -> None:
        """The money is ours (settled off chain for good, or claimed on chain)."""
        invoice = self.store.get("invoices", payment_hash)
        if invoice is None or invoice["status"] == "paid":
            return
        invoice.update(status="paid", paid_at=time.time())
        self.store.put("invoices", payment_hash, invoice)
        if self.settling.pop(payment_hash, None) is not None:
            self.store.delete("settling", payment_hash)
        self.node.events.emit("invoice_paid", payment_hash=payment_hash,
                              amount_msat=invoice.get("received_msat"))

    async def _fail(self, ch: Channel, htlc: Htlc, shared_secret: bytes, message: bytes) -> None:
        await self.node.channels.fail_htlc(ch, htlc, sphinx.build_error(shared_secret, message))
