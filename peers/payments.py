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
from dataclasses import dataclass
from typing import Any

from emulator.crypto import bolt11, sphinx
from emulator.crypto.failures import FailureCode
from emulator.errors import BadRequest, LnemuError
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_ledger import Htlc, Side
from peers.onion_payloads import HopPayload, PayloadError, decode_payload, unknown_payment_details


class PaymentFailed(LnemuError):
    code = "payment_failed"


@dataclass(frozen=True)
class RouteHop:
    """One hop of a route: the node to reach, the channel to it, what it forwards."""

    node_id: bytes
    short_channel_id: int
    amount_msat: int       # what this hop's incoming HTLC carries
    cltv_expiry: int       # that HTLC's expiry


class Payments:
    """The node's invoices and outgoing payments."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store = node.store
        self.waiting: dict[bytes, asyncio.Future] = {}
        self.hold = False  # dev/chaos: keep incoming HTLCs unresolved (jamming)
        self.held: list[tuple[bytes, int]] = []

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
        """Pay a BOLT 11 invoice; wait for the preimage or the failure."""
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
        existing = self.store.get("payments", inv.payment_hash)
        if existing and existing["status"] in ("pending", "succeeded"):
            raise PaymentFailed(f"payment {inv.payment_hash.hex()} is already "
                                f"{existing['status']}")
        final = HopPayload(amount, 0, payment_secret=inv.payment_secret, total_msat=amount)
        return await self.send_to_route(inv.payee, inv.payment_hash, final, amount,
                                        inv.min_final_cltv_expiry_delta, timeout, text, wait)

    def _direct_channel(self, node_id: bytes, amount_msat: int) -> Channel:
        for ch in self.node.channels.with_peer(node_id):
            if ch.state == ChannelState.OPEN and self.node.links.is_connected(node_id):
                return ch
        raise PaymentFailed(f"no route: no open channel to {node_id.hex()[:16]} with a "
                            "connected peer")

    async def send_to_route(self, dest: bytes, payment_hash: bytes, final: HopPayload,
                            amount_msat: int, final_cltv_delta: int, timeout: float,
                            bolt11_text: str = "", wait: bool = True) -> dict[str, Any]:
        """One attempt over a direct channel to ``dest`` (routes come with issue 6)."""
        ch = self._direct_channel(dest, amount_msat)
        cltv = self.node.height + final_cltv_delta + 2
        final = HopPayload(final.amt_to_forward, cltv, None, final.payment_secret,
                           final.total_msat, final.extra)
        session_key = os.urandom(32)
        onion = sphinx.build_onion(session_key, [(dest, final.encode())], payment_hash)
        record = {"payment_hash": payment_hash, "dest": dest, "amount_msat": amount_msat,
                  "fee_msat": 0, "status": "pending", "created": time.time(),
                  "bolt11": bolt11_text, "preimage": None, "failure": None,
                  "attempts": [{"session_key": session_key, "route": [dest],
                                "channel_id": ch.cid}]}
        self.store.put("payments", payment_hash, record)
        future = asyncio.get_running_loop().create_future()
        self.waiting[payment_hash] = future
        try:
            htlc = await self.node.channels.add_htlc(ch, amount_msat, payment_hash, cltv, onion)
            if not wait:
                return {**record, "htlc_id": htlc.htlc_id, "channel_id": ch.cid}
            outcome = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise PaymentFailed(f"no outcome within {timeout:.0f}s; the HTLC stays in "
                                "flight until it settles or times out") from None
        except LnemuError as exc:
            self._finish(payment_hash, "failed", failure=str(exc))
            raise PaymentFailed(str(exc)) from None
        finally:
            self.waiting.pop(payment_hash, None)
        if outcome["status"] != "succeeded":
            raise PaymentFailed(outcome["failure"])
        return outcome

    def _finish(self, payment_hash: bytes, status: str, **fields: Any) -> dict[str, Any] | None:
        record = self.store.get("payments", payment_hash)
        if record is None:
            return None  # not ours (a forwarded HTLC, or a dev HTLC)
        if record.get("status") == "succeeded":
            return record  # a payment that succeeded never turns into anything else
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
        self._finish(htlc.payment_hash, "succeeded", preimage=preimage)

    def reconcile(self) -> None:
        """After a restart: settle the records of payments whose outcome was decided
        while we were down, or whose HTLC never reached a commitment."""
        for record in self.store.all("payments"):
            if record["status"] != "pending":
                continue
            payment_hash = record["payment_hash"]
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
        record = self.store.get("payments", htlc.payment_hash)
        if record is None:
            return
        attempt = record["attempts"][-1]
        if "malformed_code" in info:
            why = f"hop 0 could not parse the onion ({FailureCode(info['malformed_code']).name})"
        else:
            why = self._decode_failure(attempt, info["reason"])
        self._finish(htlc.payment_hash, "failed", failure=why)

    @staticmethod
    def _decode_failure(attempt: dict[str, Any], reason: bytes) -> str:
        try:
            index, message = sphinx.decode_error(attempt["session_key"], attempt["route"],
                                                 reason)
        except LnemuError as exc:
            return f"undecodable failure: {exc}"
        code = int.from_bytes(message[:2], "big")
        try:
            name = FailureCode(code).name.lower()
        except ValueError:
            name = f"code {code:#06x}"
        return f"hop {index} ({attempt['route'][index].hex()[:16]}) failed: {name}"

    # --- receiving -------------------------------------------------------------------------
    async def on_incoming_htlc(self, ch: Channel, htlc: Htlc) -> None:
        """An HTLC to us is irrevocably committed: settle it if it pays an invoice."""
        if htlc.payment_hash in ch.preimages:
            # we revealed this preimage before (a fulfill lost to a reconnect): once
            # revealed, an HTLC can only be settled
            await self.node.channels.fulfill_htlc(ch, htlc, ch.preimages[htlc.payment_hash])
            return
        try:
            peeled = sphinx.peel_onion(htlc.onion, self.node.node_secret, htlc.payment_hash)
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
        problem = self._check_final(htlc, payload)
        if problem is not None:
            await self._fail(ch, htlc, peeled.shared_secret, problem)
            return
        invoice = self.store.get("invoices", htlc.payment_hash)
        await self.node.channels.fulfill_htlc(ch, htlc, invoice["preimage"])
        invoice.update(status="paid", paid_at=time.time(), received_msat=htlc.amount_msat)
        self.store.put("invoices", htlc.payment_hash, invoice)
        self.node.events.emit("invoice_paid", payment_hash=htlc.payment_hash,
                              amount_msat=htlc.amount_msat)

    def _check_final(self, htlc: Htlc, payload: HopPayload) -> bytes | None:
        """BOLT 4 final-node checks; the failure message, or None when all is well."""
        height = self.node.height
        invoice = self.store.get("invoices", htlc.payment_hash)
        unknown = unknown_payment_details(htlc.amount_msat, height)
        if invoice is None or invoice["status"] == "paid":
            return unknown
        if payload.payment_secret != invoice["secret"]:
            return unknown
        if invoice["amount_msat"] and not invoice["amount_msat"] <= htlc.amount_msat <= \
                2 * invoice["amount_msat"]:
            return unknown
        if htlc.amount_msat < payload.amt_to_forward:
            return int(FailureCode.FINAL_INCORRECT_HTLC_AMOUNT).to_bytes(2, "big") + \
                htlc.amount_msat.to_bytes(8, "big")
        if htlc.cltv_expiry < payload.outgoing_cltv_value:
            return int(FailureCode.FINAL_INCORRECT_CLTV_EXPIRY).to_bytes(2, "big") + \
                htlc.cltv_expiry.to_bytes(4, "big")
        if htlc.cltv_expiry < height + self.node.config.timers.min_final_cltv_expiry_delta:
            return unknown
        if time.time() > invoice["expires_at"]:
            return unknown
        return None

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
