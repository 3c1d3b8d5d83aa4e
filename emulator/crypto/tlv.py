"""BOLT 1 TLV streams, truncated unsigned integers, and the TLV record types lnemu uses.

A TLV stream is a sequence of ``(type, length, value)`` records, ``type`` and
``length`` being BigSize integers. Records are kept as ``dict[int, bytes]``
mapping type to value; the encoder sorts by type, the decoder insists on it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from emulator.crypto.bigsize import BigSizeError, decode_bigsize, encode_bigsize
from emulator.errors import DecodeError, LnemuError

# bLIP-3 keysend: final-hop record carrying the 32-byte payment preimage.
KEYSEND_PREIMAGE = 5482373484

# WhatSat chat messages riding on keysend payments.
TEXT_MESSAGE = 34349334
SENDER_SIGNATURE = 34349337
SENDER_PUBKEY = 34349339
MESSAGE_TIMESTAMP = 34349343

# BOLT 4 onion hop payload (tlv_payload) record types.
AMT_TO_FORWARD = 2
OUTGOING_CLTV_VALUE = 4
SHORT_CHANNEL_ID = 6
PAYMENT_DATA = 8
PAYMENT_METADATA = 16

_MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF


class TlvError(DecodeError):
    """A TLV stream that does not parse."""

    code = "bad_tlv"


class TlvTruncatedError(TlvError):
    """A TLV record whose type, length or value runs past the end of the stream."""

    code = "tlv_truncated"


class TlvNonCanonicalError(TlvError, BigSizeError):
    """A TLV type or length written as a non-minimal BigSize."""

    code = "tlv_non_canonical"


class TlvOrderError(TlvError):
    """TLV record types not strictly increasing (a duplicate type included)."""

    code = "tlv_not_increasing"


class TlvUnknownEvenTypeError(TlvError):
    """An even TLV type the reader does not understand (BOLT 1: "it's OK to be odd")."""

    code = "tlv_unknown_even_type"


class TruncatedIntError(DecodeError):
    """A truncated unsigned integer (tu16/tu32/tu64) with a leading zero byte or too wide."""

    code = "bad_truncated_int"


class TlvEncodeError(LnemuError):
    """Records that cannot be written as a TLV stream (type out of range, value not bytes)."""

    code = "bad_tlv_record"


def encode_tlv_stream(records: Mapping[int, bytes]) -> bytes:
    """Serialize ``records`` (type -> value) as a TLV stream sorted by type."""
    for record_type, value in records.items():
        if not isinstance(record_type, int) or not 0 <= record_type <= _MAX_U64:
            raise TlvEncodeError(f"TLV type out of range: {record_type!r}")
        if not isinstance(value, bytes | bytearray):
            kind = type(value).__name__
            raise TlvEncodeError(f"TLV type {record_type}: value is {kind}, not bytes")
    parts: list[bytes] = []
    for record_type in sorted(records):
        value = records[record_type]
        parts.append(encode_bigsize(record_type))
        parts.append(encode_bigsize(len(value)))
        parts.append(bytes(value))
    return b"".join(parts)


def decode_tlv_stream(data: bytes) -> dict[int, bytes]:
    """Parse a whole TLV stream into type -> value, rejecting malformed or unordered records."""
    records: dict[int, bytes] = {}
    previous_type = -1
    offset = 0
    while offset < len(data):
        record_type, offset = _read_bigsize(data, offset, "type")
        if record_type <= previous_type:
            raise TlvOrderError(
                f"TLV type {record_type} follows type {previous_type}: types must strictly increase"
            )
        length, offset = _read_bigsize(data, offset, f"length of type {record_type}")
        end = offset + length
        if end > len(data):
            raise TlvTruncatedError(
                f"truncated value of TLV type {record_type}: "
                f"{length} bytes declared, {len(data) - offset} left"
            )
        records[record_type] = bytes(data[offset:end])
        previous_type = record_type
        offset = end
    return records


def require_known_even_types(records: Mapping[int, bytes], known_types: Iterable[int]) -> None:
    """Raise if ``records`` holds an even type not in ``known_types`` (odd ones may be ignored)."""
    known = set(known_types)
    for record_type in sorted(records):
        if record_type % 2 == 0 and record_type not in known:
            raise TlvUnknownEvenTypeError(f"unknown even TLV type {record_type}")


def _read_bigsize(data: bytes, offset: int, what: str) -> tuple[int, int]:
    """Read one BigSize, telling a truncated one apart from a non-canonical one."""
    width = {0xFD: 3, 0xFE: 5, 0xFF: 9}.get(data[offset], 1) if offset < len(data) else 1
    if offset + width > len(data):
        raise TlvTruncatedError(f"truncated TLV {what} at offset {offset}")
    try:
        return decode_bigsize(data, offset)
    except BigSizeError as exc:
        raise TlvNonCanonicalError(f"non-canonical BigSize for TLV {what}: {exc}") from exc


def encode_tu64(value: int) -> bytes:
    """Encode 0 ≤ value < 2**64 as a tu64: big-endian with no leading zero bytes (0 is empty)."""
    return _encode_truncated(value, 8)


def decode_tu64(data: bytes) -> int:
    """Decode a tu64, rejecting more than 8 bytes or a leading zero byte."""
    return _decode_truncated(data, 8)


def encode_tu32(value: int) -> bytes:
    """Encode 0 ≤ value < 2**32 as a tu32 (e.g. ``outgoing_cltv_value``)."""
    return _encode_truncated(value, 4)


def decode_tu32(data: bytes) -> int:
    """Decode a tu32, rejecting more than 4 bytes or a leading zero byte."""
    return _decode_truncated(data, 4)


def _encode_truncated(value: int, max_bytes: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << (8 * max_bytes):
        raise TlvEncodeError(f"value out of range for tu{8 * max_bytes}: {value!r}")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _decode_truncated(data: bytes, max_bytes: int) -> int:
    bits = 8 * max_bytes
    if len(data) > max_bytes:
        raise TruncatedIntError(f"tu{bits} is {len(data)} bytes long, at most {max_bytes} allowed")
    if data[:1] == b"\x00":
        raise TruncatedIntError(f"tu{bits} is not minimal: leading zero byte")
    return int.from_bytes(data, "big")
