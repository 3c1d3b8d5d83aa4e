"""Text messages over Lightning (WhatSat records on a keysend payment).

The sender signs (sender, recipient, timestamp, text) with its node key; every
routing hop is paid its fee for carrying the onion; the recipient verifies the
signature before the message enters its inbox. Delivery is payment success. A text
must fit in what the 1,300-byte onion leaves after the route's other payloads.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

from emulator import policy
from emulator.crypto import sphinx, tlv
from emulator.errors import BadRequest, LnemuError
from peers.htlc_types import Htlc

FORWARD_PAYLOAD_BYTES = 30  # a forwarding hop's payload: amount, cltv, short channel id
FINAL_FIXED_BYTES = 130  # the final hop's amount, cltv, keysend preimage, sender, sig, time


def _digest(sender: bytes, recipient: bytes, timestamp: int, text: bytes) -> bytes:
    return hashlib.sha256(sender + recipient + timestamp.to_bytes(8, "big") + text).digest()


class Messages:
    """The node's outgoing and received messages."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def room(self, hops: int) -> int:
        """The most text bytes a message to a payee ``hops`` away can carry."""
        others = [FORWARD_PAYLOAD_BYTES] * (hops - 1)
        return sphinx.max_payload_len(sphinx.remaining_payload_room(others)) - FINAL_FIXED_BYTES

    async def send(self, dest: bytes, text: str, amount_msat: int, timeout: float,
                   wait: bool) -> dict[str, Any]:
        if not isinstance(text, str) or not text:
            raise BadRequest("text must be a non-empty string")
        data = text.encode()
        hops = self._hops_to(dest, amount_msat)
        limit = self.room(hops)
        if len(data) > limit:
            raise BadRequest(f"message of {len(data)} bytes is too long: a route of {hops} "
                             f"hop(s) leaves room for {limit} bytes in the onion")
        now = int(time.time())
        sig = policy.sign(self.node.node_secret, _digest(self.node.node_id, dest, now, data))
        extra = {tlv.TEXT_MESSAGE: data, tlv.SENDER_PUBKEY: self.node.node_id,
                 tlv.SENDER_SIGNATURE: sig, tlv.MESSAGE_TIMESTAMP: now.to_bytes(8, "big")}
        return await self.node.payments.keysend(dest, amount_msat, extra, timeout, wait,
                                                kind="message")

    def _hops_to(self, dest: bytes, amount_msat: int) -> int:
        from peers.paying import Request
        req = Request(dest, b"\x00" * 32, amount_msat,
                      self.node.config.timers.min_final_cltv_expiry_delta)
        try:
            return max(len(r) for r in self.node.payer.routes(req))
        except LnemuError as exc:  # no route yet: the payment will say so
            self.node.log.info("message to %s: no route to size the text: %s",
                               dest.hex()[:16], exc)
            return 20

    def accept(self, htlc: Htlc, records: dict[int, bytes]) -> dict[str, Any]:
        """Verify and store a received message; returns the inbox entry."""
        text = records[tlv.TEXT_MESSAGE]
        sender = records.get(tlv.SENDER_PUBKEY, b"")
        sig = records.get(tlv.SENDER_SIGNATURE, b"")
        stamp = int.from_bytes(records.get(tlv.MESSAGE_TIMESTAMP, b"\x00"), "big")
        verified = len(sender) == 33 and policy.verify(
            sender, _digest(sender, self.node.node_id, stamp, text), sig)
        entry = {"payment_hash": htlc.payment_hash, "sender": sender, "verified": verified,
                 "timestamp": stamp, "received_at": time.time(),
                 "text": text.decode(errors="replace"), "amount_msat": htlc.amount_msat}
        inbox = self.node.store.value("inbox", [])
        inbox.append(entry)
        self.node.store.set_value("inbox", inbox)
        self.node.events.emit("message_received", sender=sender, verified=verified,
                              text=entry["text"][:200], amount_msat=htlc.amount_msat)
        return entry

    def inbox(self) -> list[dict[str, Any]]:
        return self.node.store.value("inbox", [])
