"""Hop payloads (BOLT 4 TLV) and failure messages: what rides inside onions."""
from __future__ import annotations

from dataclasses import dataclass

from emulator.crypto import tlv
from emulator.crypto.failures import FailureCode
from emulator.errors import DecodeError


class PayloadError(DecodeError):
    """A hop payload that is missing fields or malformed (invalid_onion_payload)."""

    code = "invalid_onion_payload"


@dataclass(frozen=True)
class HopPayload:
    """One hop's instructions."""

    amt_to_forward: int
    outgoing_cltv_value: int
    short_channel_id: int | None = None  # None at the final hop
    payment_secret: bytes | None = None
    total_msat: int | None = None
    extra: tuple[tuple[int, bytes], ...] = ()  # e.g. keysend preimage, text message

    def encode(self) -> bytes:
        records = {tlv.AMT_TO_FORWARD: tlv.encode_tu64(self.amt_to_forward),
                   tlv.OUTGOING_CLTV_VALUE: tlv.encode_tu32(self.outgoing_cltv_value)}
        if self.short_channel_id is not None:
            records[tlv.SHORT_CHANNEL_ID] = self.short_channel_id.to_bytes(8, "big")
        if self.payment_secret is not None:
            records[tlv.PAYMENT_DATA] = self.payment_secret + tlv.encode_tu64(
                self.total_msat or self.amt_to_forward)
        records.update(dict(self.extra))
        return tlv.encode_tlv_stream(records)

    @property
    def records(self) -> dict[int, bytes]:
        return dict(self.extra)


def decode_payload(data: bytes) -> HopPayload:
    """Parse a hop payload; raise PayloadError naming what is wrong."""
    try:
        records = tlv.decode_tlv_stream(data)
        amt = tlv.decode_tu64(records.pop(tlv.AMT_TO_FORWARD))
        cltv = tlv.decode_tu32(records.pop(tlv.OUTGOING_CLTV_VALUE))
    except KeyError as exc:
        raise PayloadError(f"hop payload lacks TLV type {exc.args[0]}") from None
    except DecodeError as exc:
        raise PayloadError(f"hop payload: {exc}") from None
    scid = records.pop(tlv.SHORT_CHANNEL_ID, None)
    if scid is not None and len(scid) != 8:
        raise PayloadError("short_channel_id must be 8 bytes")
    data_field = records.pop(tlv.PAYMENT_DATA, None)
    secret = total = None
    if data_field is not None:
        if not 32 <= len(data_field) <= 40:
            raise PayloadError("payment_data must be a 32-byte secret and a tu64 total")
        secret = data_field[:32]
        try:
            total = tlv.decode_tu64(data_field[32:])
        except DecodeError as exc:
            raise PayloadError(f"payment_data total: {exc}") from None
    understood = {tlv.PAYMENT_METADATA, tlv.KEYSEND_PREIMAGE, tlv.TEXT_MESSAGE}
    unknown_even = [t for t in records if t % 2 == 0 and t not in understood]
    if unknown_even:
        raise PayloadError(f"unknown even TLV type(s) {unknown_even}")
    return HopPayload(amt, cltv, int.from_bytes(scid, "big") if scid else None, secret, total,
                      tuple(sorted(records.items())))


def failure_message(code: FailureCode, data: bytes = b"") -> bytes:
    """A BOLT 4 failure_message: u16 code followed by its data."""
    return int(code).to_bytes(2, "big") + data


def unknown_payment_details(amount_msat: int, height: int) -> bytes:
    """incorrect_or_unknown_payment_details with htlc_msat and height."""
    return failure_message(FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
                           amount_msat.to_bytes(8, "big") + height.to_bytes(4, "big"))
