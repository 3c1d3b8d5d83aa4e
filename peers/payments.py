"""Invoices and payments: create BOLT 11 invoices, pay them, receive HTLCs as payee.

A payment is one or more attempts; each attempt is an HTLC carrying an onion built
for a route (a direct channel is a route of one hop). The payee releases the
preimage only for an HTLC that is irrevocably committed and matches an unpaid
invoice; failures come back as error onions that the payer decodes to the failing
hop and BOLT 4 code.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

from emulator.crypto import bolt11, sphinx, tlv
from emulator.crypto.failures import FailureCode
from emulator.errors import BadRequest, LnemuError
from peers.channel import Channel
from peers.graph import edges_from_route_hints
from peers.htlc_types import Htlc, Side
from peers.onion_payloads import PayloadError, decode_payload
from peers.paying import Request

MAX_PAYMENT_TIMEOUT_S = 86_400.0  # a payment may retry for a day at most
PEELED_AHEAD_MAX = 1024  # onions peeled ahead of their HTLC's turn, kept until used


class PaymentFailed(LnemuError):
    code = "payment_failed"


class Payments:
    """The node's invoices and outgoing payments."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store = node.store
        self.waiting: dict[bytes, asyncio.Future] = {}
        self.hold = False  # dev/chaos: keep incoming HTLCs unresolved (jamming)
        self.held: list[tuple[bytes, int]] = []
        self._running: dict[bytes, dict[str, Any]] = {}  # records of payments being made
        # (payment hash, onion) -> its layer, peeled while the HTLC was being committed
        self._peeled: dict[tuple[bytes, bytes], sphinx.PeeledOnion] = {}

    def _record(self, payment_hash: bytes) -> dict[str, Any] | None:
        return self._running.get(payment_hash) or self.store.get("payments", payment_hash)

    # --- invoices ---------------------------------------------------------------------
    def create_invoice(self, amount_msat: int | None, description: str,
                       expiry: int = 3600) -> dict[str, Any]:
        """A new BOLT 11 invoice; its preimage stays here until it is paid."""
        if amount_msat is not None and (type(amount_msat) is not int or
                                        not 0 < amount_msat <= 21_000_000 * 10**11):
            raise BadRequest(f"amount_msat must be a positive int or omitted, got {amount_msat!r}")
        if not isinstance(description, str) or len(description.encode()) > 639:
            raise BadRequest("description must be a string of at most 639 bytes")
        if type(expiry) is not int or not 1 <= expiry <= 365 * 86400:
            raise BadRequest("expiry must be from 1 second to a year")
        preimage, secret = os.urandom(32), os.urandom(32)
        payment_hash = hashlib.sha256(preimage).digest()
        inv = bolt11.Invoice(payment_hash=payment_hash, payment_secret=secret,
                             amount_msat=amount_msat, description=description, expiry=expiry,
                             min_final_cltv_expiry_delta=self.node.config.timers
                             .min_final_cltv_expiry_delta)
        text = bolt11.encode(inv, self.node.node_secret)
        record = {"payment_hash": payment_hash, "preimage": preimage, "secret": secret,
                  "amount_msat": amount_msat, "description": description, "bolt11": text,
                  "status": "unpaid", "created": inv.timestamp, "expires_at": inv.expires_at,
                  "received_msat": 0, "paid_at": None}
        self.store.put("invoices", payment_hash, record)
        self.node.events.emit("invoice_created", payment_hash=payment_hash,
                              amount_msat=amount_msat)
        return {"bolt11": text, "payment_hash": payment_hash, "payment_secret": secret,
                "expires_at": inv.expires_at}

    # --- paying ---------------------------------------------------------------------------
    async def pay(self, text: str, amount_msat: int | None = None,
                  timeout: float = 60.0, wait: bool = True) -> dict[str, Any]:
        """Pay a BOLT 11 invoice over routes from our graph (and its route hints)."""
        try:
            inv = bolt11.decode(text)
        except LnemuError as exc:
            raise BadRequest(f"invalid invoice: {exc}") from None
        if inv.is_expired():
            raise PaymentFailed(f"invoice expired at {inv.expires_at}")
        amount = inv.amount_msat or amount_msat
        if amount is None or (inv.amount_msat and amount_msat and amount_msat != inv.amount_msat):
            raise BadRequest("amount_msat is required for an any-amount invoice and must "
                             "match a fixed-amount one")
        if inv.payee == self.node.node_id:
            raise BadRequest("cannot pay our own invoice")
        hints = tuple(edges_from_route_hints(inv.route_hints, inv.payee)) \
            if inv.route_hints else ()
        req = Request(inv.payee, inv.payment_hash, amount, inv.min_final_cltv_expiry_delta,
                      inv.payment_secret, hint_edges=hints)
        return await self.start(req, timeout, wait, bolt11=text)

    async def keysend(self, dest: bytes, amount_msat: int, extra: dict[int, bytes] | None = None,
                      timeout: float = 60.0, wait: bool = True, kind: str = "keysend"
                      ) -> dict[str, Any]:
        """Pay ``dest`` without an invoice (bLIP-3): the preimage rides in the onion."""
        if dest == self.node.node_id:
            raise BadRequest("cannot pay ourselves")
        if type(amount_msat) is not int or amount_msat <= 0:
            raise BadRequest(f"amount_msat must be a positive int, got {amount_msat!r}")
        preimage = os.urandom(32)
        records = {tlv.KEYSEND_PREIMAGE: preimage, **(extra or {})}
        req = Request(dest, hashlib.sha256(preimage).digest(), amount_msat,
                      self.node.config.timers.min_final_cltv_expiry_delta,
                      extra=tuple(sorted(records.items())))
        return await self.start(req, timeout, wait, kind=kind)

    async def start(self, req: Request, timeout: float, wait: bool, **info: Any
                    ) -> dict[str, Any]:
        """Record a payment and run it (in the background unless ``wait``)."""
        if type(timeout) not in (int, float) or not 0 < timeout <= MAX_PAYMENT_TIMEOUT_S:
            raise BadRequest(f"timeout must be a number of seconds above 0 and at most "
                             f"{MAX_PAYMENT_TIMEOUT_S:.0f}, got {timeout!r}")
        existing = self._record(req.payment_hash)
        if existing and existing["status"] in ("pending", "succeeded"):
            raise PaymentFailed(f"payment {req.payment_hash.hex()} is already "
                                f"{existing['status']}")
        record = {"payment_hash": req.payment_hash, "dest": req.dest,
                  "amount_msat": req.amount_msat, "fee_msat": 0, "status": "pending",
                  "created": time.time(), "preimage": None, "failure": None, "attempts": [],
                  "parts": 1, "kind": info.pop("kind", "invoice"), **info}
        self.store.put("payments", req.payment_hash, record)
        self._running[req.payment_hash] = record
        if not wait:
            self.node.spawn(self._run(req, time.time() + timeout), "pay")
            return {"payment_hash": req.payment_hash, "status": "pending"}
        outcome = await self._run(req, time.time() + timeout)  # in the caller's task
        if outcome["status"] != "succeeded":
            raise PaymentFailed(outcome.get("failure") or "payment failed")
        return outcome

    async def _run(self, req: Request, deadline: float) -> dict[str, Any]:
        try:
            result = await self.node.payer.run(req, deadline)
            status = result.pop("status")
            return self._finish(req.payment_hash, status, **result) or {"status": status}
        finally:
            self._running.pop(req.payment_hash, None)

    def add_attempt(self, payment_hash: bytes, attempt: dict[str, Any]) -> None:
        """Remember an attempt (its session key decodes the failure, even after a restart)."""
        record = self._record(payment_hash)
        if record is not None:
            record["attempts"].append(attempt)
            self.store.put("payments", payment_hash, record)

    def _finish(self, payment_hash: bytes, status: str, **fields: Any) -> dict[str, Any] | None:
        record = self._record(payment_hash)
        if record is None:
            return None  # not ours (a forwarded HTLC, or a dev HTLC)
        if record.get("status") == "succeeded" and status != "succeeded":
            return record  # a payment that succeeded never turns into anything else
        if record.get("status") == status:
            record.update(fields)  # more detail on an outcome already known (fee, parts)
            self.store.put("payments", payment_hash, record)
            return record
        record.update(status=status, finished=time.time(), **fields)
        self.store.put("payments", payment_hash, record)
        self.node.events.emit(f"payment_{status}", payment_hash=payment_hash,
                              amount_msat=record.get("amount_msat"),
                              failure=record.get("failure"))
        future = self.waiting.get(payment_hash)
        if future is not None and not future.done():
            future.set_result(record)
        return record

    async def on_htlc_fulfilled(self, ch: Channel, htlc: Htlc, preimage: bytes) -> None:
        self._finish(htlc.payment_hash, "succeeded", preimage=preimage)  # the proof, at once
        self.node.payer.resolve(ch, htlc, {"preimage": preimage})

    def reconcile(self) -> None:
        """After a restart: settle the records of payments whose outcome was decided
        while we were down, or whose HTLC never reached a commitment."""
        for record in self.store.all("payments"):
            if record["status"] != "pending":
                continue
            payment_hash = record["payment_hash"]
            if not record.get("attempts"):
                self._finish(payment_hash, "failed", failure="stopped before any attempt")
                continue
            channel = self.node.channels.channels.get(record["attempts"][-1]["channel_id"])
            if channel is not None and payment_hash in channel.preimages:
                self._finish(payment_hash, "succeeded", preimage=channel.preimages[payment_hash])
            elif channel is None or channel.ledger is None or not any(
                    h.payment_hash == payment_hash for side in (Side.LOCAL, Side.REMOTE)
                    for _, h in channel.ledger.htlcs(side) + channel.ledger.htlcs_pending(side)):
                self._finish(payment_hash, "failed",
                             failure="the HTLC never reached a commitment (restart)")

    async def on_preimage_onchain(self, payment_hash: bytes, preimage: bytes) -> None:
        """The payee claimed our HTLC on chain: the payment succeeded."""
        if self.store.get("payments", payment_hash) is not None:
            self._finish(payment_hash, "succeeded", preimage=preimage)

    async def on_htlc_timed_out_onchain(self, payment_hash: bytes) -> None:
        """Our HTLC came back to us on chain after its expiry: the payment failed."""
        if self.store.get("payments", payment_hash) is not None:
            self._finish(payment_hash, "failed", failure="HTLC timed out on chain")

    async def on_htlc_discarded(self, htlc: Htlc) -> None:
        """Our HTLC was never committed before the link dropped: the attempt failed."""
        self._finish(htlc.payment_hash, "failed",
                     failure="the peer disconnected before the HTLC was committed")

    async def on_htlc_failed(self, ch: Channel, htlc: Htlc, info: dict[str, Any]) -> None:
        if self.node.payer.resolve(ch, htlc, info):
            return
        record = self.store.get("payments", htlc.payment_hash)  # nobody waits: a restart
        if record is not None and record["status"] == "pending":
            self._finish(htlc.payment_hash, "failed", failure="the HTLC failed after a restart")

    # --- receiving -------------------------------------------------------------------------
    async def on_incoming_htlc(self, ch: Channel, htlc: Htlc) -> None:
        """An HTLC to us is irrevocably committed: settle it if it pays an invoice."""
        revealed = self.node.channels.revealed(ch, htlc.payment_hash)
        if revealed is not None:
            # we revealed this preimage before (a fulfill lost to a reconnect or a
            # restart): once revealed, an HTLC can only be settled
            await self.node.channels.fulfill_htlc(ch, htlc, revealed)
            return
        try:
            peeled = self._peeled.pop((htlc.payment_hash, htlc.onion), None) or \
                sphinx.peel_onion(htlc.onion, self.node.node_secret, htlc.payment_hash)
        except sphinx.OnionPeelError as exc:
            await self.node.channels.fail_malformed(ch, htlc, exc)
            return
        try:
            payload = decode_payload(peeled.payload)
        except PayloadError:
            await self._fail(ch, htlc, peeled.shared_secret, int(
                FailureCode.INVALID_ONION_PAYLOAD).to_bytes(2, "big") + bytes(3))
            return
        if peeled.next_onion is not None:
            await self.node.forwarder.forward(ch, htlc, payload, peeled)
            return
        if self.hold:
            self.held.append((ch.cid, htlc.htlc_id))
            self.node.events.emit("htlc_held", channel_id=ch.cid, htlc_id=htlc.htlc_id)
            return
        await self.node.receiver.on_final_htlc(ch, htlc, payload, peeled.shared_secret)

    def peel_ahead(self, htlc: Htlc) -> None:
        """Peel an incoming HTLC's onion while we wait for the peer's revocation, so
        that forwarding or settling it, once irrevocable, does not wait for the point
        multiplication and the stream (the peeling is pure: the same layer then). An
        onion that does not peel is left for then, to be failed back."""
        key = (htlc.payment_hash, htlc.onion)
        if not htlc.onion or key in self._peeled:
            return
        try:
            self._peeled[key] = sphinx.peel_onion(htlc.onion, self.node.node_secret,
                                                  htlc.payment_hash)
        except sphinx.OnionPeelError:
            return
        if len(self._peeled) > PEELED_AHEAD_MAX:  # HTLCs that never became irrevocable
            del self._peeled[next(iter(self._peeled))]

    async def _fail(self, ch: Channel, htlc: Htlc, shared_secret: bytes, message: bytes) -> None:
        await self.node.channels.fail_htlc(ch, htlc, sphinx.build_error(shared_secret, message))

    def preimage_for(self, payment_hash: bytes) -> bytes | None:
        """The preimage of one of our invoices (to claim an HTLC on chain)."""
        invoice = self.store.get("invoices", payment_hash)
        return invoice["preimage"] if invoice else None

    def list_invoices(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "preimage" or r["status"] == "paid"}
                for r in self.store.all("invoices")]

    def list_payments(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "attempts"} |
                {"attempts": len(r.get("attempts", []))} for r in self.store.all("payments")]
