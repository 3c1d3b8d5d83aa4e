"""TLV streams and truncated integers (BOLT 1)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.crypto.bigsize import BigSizeError
from emulator.crypto.tlv import (
    KEYSEND_PREIMAGE,
    TEXT_MESSAGE,
    TlvEncodeError,
    TlvError,
    TlvNonCanonicalError,
    TlvOrderError,
    TlvTruncatedError,
    TlvUnknownEvenTypeError,
    TruncatedIntError,
    decode_tlv_stream,
    decode_tu32,
    decode_tu64,
    encode_tlv_stream,
    encode_tu32,
    encode_tu64,
    require_known_even_types,
)
from emulator.errors import DecodeError

_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def test_encode_sorts_by_type() -> None:
    stream = encode_tlv_stream({4: b"\x80", 2: b"\x01\x02"})
    assert stream.hex() == "020201020401" + "80"


def test_empty_stream() -> None:
    assert encode_tlv_stream({}) == b""
    assert decode_tlv_stream(b"") == {}


def test_large_types_use_bigsize() -> None:
    preimage = bytes(range(32))
    stream = encode_tlv_stream({KEYSEND_PREIMAGE: preimage, TEXT_MESSAGE: b"hi"})
    assert stream.startswith(bytes.fromhex("fe020c2116") + b"\x02hi")
    assert decode_tlv_stream(stream) == {TEXT_MESSAGE: b"hi", KEYSEND_PREIMAGE: preimage}


def test_zero_length_value() -> None:
    assert decode_tlv_stream(bytes.fromhex("0100")) == {1: b""}


# BOLT 1 Appendix B style failures, by kind.
_BAD_STREAMS = [
    ("type truncated", "fd", TlvTruncatedError),
    ("type truncated two bytes", "fd01", TlvTruncatedError),
    ("length missing", "01", TlvTruncatedError),
    ("length truncated", "01fe0000", TlvTruncatedError),
    ("value missing", "0101", TlvTruncatedError),
    ("value short", "0103abcd", TlvTruncatedError),
    ("type not canonical", "fd00fc00", TlvNonCanonicalError),
    ("length not canonical", "01fd000100", TlvNonCanonicalError),
    ("duplicate type", "01000100", TlvOrderError),
    ("decreasing type", "02000100", TlvOrderError),
    ("duplicate after valid", "0001aa0200020100", TlvOrderError),
]


@pytest.mark.parametrize(
    ("stream_hex", "error"),
    [(hex_, err) for _, hex_, err in _BAD_STREAMS],
    ids=[name for name, _, _ in _BAD_STREAMS],
)
def test_decode_rejects(stream_hex: str, error: type[TlvError]) -> None:
    with pytest.raises(error) as excinfo:
        decode_tlv_stream(bytes.fromhex(stream_hex))
    assert isinstance(excinfo.value, DecodeError)


def test_non_canonical_is_also_a_bigsize_error() -> None:
    with pytest.raises(BigSizeError):
        decode_tlv_stream(bytes.fromhex("fd00fc00"))


def test_error_codes_are_distinct() -> None:
    codes = {TlvTruncatedError.code, TlvNonCanonicalError.code, TlvOrderError.code, TlvError.code}
    assert len(codes) == 4


@pytest.mark.parametrize("records", [{-1: b""}, {1 << 64: b""}, {1: "text"}])
def test_encode_rejects_bad_records(records: dict) -> None:
    with pytest.raises(TlvEncodeError):
        encode_tlv_stream(records)


def test_require_known_even_types() -> None:
    require_known_even_types({2: b"", 3: b"", 7: b""}, known_types=[2])
    with pytest.raises(TlvUnknownEvenTypeError):
        require_known_even_types({2: b"", 10: b""}, known_types=[2])


@pytest.mark.parametrize(
    ("value", "encoded_hex"),
    [(0, ""), (1, "01"), (0xFF, "ff"), (0x100, "0100"), ((1 << 64) - 1, "ff" * 8)],
)
def test_tu64_vectors(value: int, encoded_hex: str) -> None:
    assert encode_tu64(value).hex() == encoded_hex
    assert decode_tu64(bytes.fromhex(encoded_hex)) == value


@pytest.mark.parametrize("encoded_hex", ["00", "0001", "000000", "01" * 9])
def test_tu64_rejects_non_minimal_or_wide(encoded_hex: str) -> None:
    with pytest.raises(TruncatedIntError):
        decode_tu64(bytes.fromhex(encoded_hex))


def test_tu32_bounds() -> None:
    assert decode_tu32(encode_tu32(0xFFFF_FFFF)) == 0xFFFF_FFFF
    with pytest.raises(TruncatedIntError):
        decode_tu32(bytes(5) + b"\x01")
    with pytest.raises(TlvEncodeError):
        encode_tu32(1 << 32)
    with pytest.raises(TlvEncodeError):
        encode_tu64(-1)


@given(_U64)
def test_tu64_round_trip(value: int) -> None:
    encoded = encode_tu64(value)
    assert decode_tu64(encoded) == value
    assert encoded[:1] != b"\x00"


@given(st.dictionaries(_U64, st.binary(max_size=300), max_size=12))
def test_tlv_round_trip(records: dict[int, bytes]) -> None:
    assert decode_tlv_stream(encode_tlv_stream(records)) == records


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    try:
        decode_tlv_stream(data)
    except DecodeError:
        pass


@given(
    st.dictionaries(_U64, st.binary(max_size=40), min_size=1, max_size=6),
    st.data(),
)
def test_damaged_streams_raise_only_decode_errors(records: dict[int, bytes], data) -> None:
    stream = bytearray(encode_tlv_stream(records))
    position = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    if data.draw(st.booleans()):
        del stream[position:]
    else:
        stream[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        decode_tlv_stream(bytes(stream))
    except DecodeError:
        pass
