"""BigSize integers (BOLT 1, Appendix A): big-endian, minimally encoded varints."""
from __future__ import annotations

from emulator.errors import DecodeError


class BigSizeError(DecodeError):
    """A BigSize that is truncated or not minimally encoded."""

    code = "bad_bigsize"


_MAX = 0xFFFF_FFFF_FFFF_FFFF


def encode_bigsize(value: int) -> bytes:
    """Encode ``value`` (0 ≤ value < 2**64) as a BigSize."""
    if not 0 <= value <= _MAX:
        raise ValueError(f"BigSize out of range: {value}")
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "big")
    if value <= 0xFFFF_FFFF:
        return b"\xfe" + value.to_bytes(4, "big")
    return b"\xff" + value.to_bytes(8, "big")


def decode_bigsize(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a BigSize at ``offset``; return (value, offset just past it)."""
    if offset >= len(data):
        raise BigSizeError("unexpected EOF reading BigSize")
    first = data[offset]
    if first < 0xFD:
        return first, offset + 1
    width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x1_0000_0000)}[first]
    end = offset + 1 + width
    if end > len(data):
        raise BigSizeError("unexpected EOF reading BigSize")
    value = int.from_bytes(data[offset + 1 : end], "big")
    if value < minimum:
        raise BigSizeError("decoded BigSize is not canonical")
    return value, end
