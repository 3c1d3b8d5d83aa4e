"""Bech32 (BIP 173) checksum and 8-bit/5-bit conversion, without BIP 173's 90-character limit.

BOLT 11: "A reader MUST parse the address as Bech32, as specified in BIP-0173 (also without
the character limit)". Invoices are far longer than 90 characters, so this module does not
enforce that limit. Only the original bech32 constant is used (BOLT 11 is not bech32m).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from emulator.errors import DecodeError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
CHECKSUM_LENGTH = 6
_CHAR_TO_VALUE = {char: value for value, char in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1


class Bech32Error(DecodeError):
    """A string that is not valid bech32."""

    code = "bad_bech32"


class Bech32CharacterError(Bech32Error):
    """A character outside printable US-ASCII, or a data character outside the bech32 set."""

    code = "bech32_bad_character"


class Bech32MixedCaseError(Bech32Error):
    """Upper- and lower-case letters in one string (BIP 173 forbids mixing them)."""

    code = "bech32_mixed_case"


class Bech32SeparatorError(Bech32Error):
    """No '1' separator, or nothing before it (an empty human-readable part)."""

    code = "bech32_no_separator"


class Bech32LengthError(Bech32Error):
    """A data part too short to hold the 6-character checksum."""

    code = "bech32_too_short"


class Bech32ChecksumError(Bech32Error):
    """A checksum that does not match the human-readable and data parts."""

    code = "bech32_bad_checksum"


def _polymod(values: Iterable[int]) -> int:
    """BIP 173's BCH checksum over GF(32)."""
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = ((checksum & 0x1FFFFFF) << 5) ^ value
        for bit, generator in enumerate(_GENERATOR):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    """The human-readable part as checksum input: high bits, a zero, then low bits."""
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def create_checksum(hrp: str, data: Sequence[int]) -> list[int]:
    """The six 5-bit checksum values for ``hrp`` and 5-bit ``data``."""
    polymod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ _BECH32_CONST
    return [(polymod >> 5 * (5 - index)) & 31 for index in range(CHECKSUM_LENGTH)]


def verify_checksum(hrp: str, data_with_checksum: Sequence[int]) -> bool:
    """True if the last six 5-bit values are the correct checksum of the rest."""
    return _polymod([*_hrp_expand(hrp), *data_with_checksum]) == _BECH32_CONST


def encode(hrp: str, data: Sequence[int]) -> str:
    """Encode a lower-case ``hrp`` and 5-bit ``data`` as a bech32 string (no length limit)."""
    combined = [*data, *create_checksum(hrp, data)]
    return hrp + "1" + "".join(CHARSET[value] for value in combined)


def decode(text: str) -> tuple[str, list[int]]:
    """Split a bech32 string into its lower-case hrp and 5-bit data (checksum removed)."""
    if any(not 33 <= ord(char) <= 126 for char in text):
        raise Bech32CharacterError("character outside printable US-ASCII")
    if text.lower() != text and text.upper() != text:
        raise Bech32MixedCaseError("mixed upper and lower case")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1:
        raise Bech32SeparatorError("missing '1' separator or empty human-readable part")
    hrp, data_chars = text[:separator], text[separator + 1 :]
    if len(data_chars) < CHECKSUM_LENGTH:
        raise Bech32LengthError("data part shorter than the checksum")
    bad = [char for char in data_chars if char not in _CHAR_TO_VALUE]
    if bad:
        raise Bech32CharacterError(f"invalid bech32 data character {bad[0]!r}")
    data = [_CHAR_TO_VALUE[char] for char in data_chars]
    if not verify_checksum(hrp, data):
        raise Bech32ChecksumError("bech32 checksum mismatch")
    return hrp, data[:-CHECKSUM_LENGTH]


def convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup ``from_bits``-wide values into ``to_bits``-wide ones (big-endian bit order).

    With ``pad`` the last group is filled with zero bits; without it, leftover bits that do
    not fill a whole group are dropped (BOLT 11 fields carry such padding).
    """
    accumulator = 0
    bit_count = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise ValueError(f"value {value} does not fit in {from_bits} bits")
        accumulator = (accumulator << from_bits) | value
        bit_count += from_bits
        while bit_count >= to_bits:
            bit_count -= to_bits
            out.append((accumulator >> bit_count) & mask)
        accumulator &= (1 << bit_count) - 1
    if pad and bit_count:
        out.append((accumulator << (to_bits - bit_count)) & mask)
    return out


def bytes_to_u5(data: bytes) -> list[int]:
    """Bytes as 5-bit values, the last one zero-padded."""
    return convert_bits(data, 8, 5, pad=True)


def u5_to_bytes(data: Sequence[int], pad: bool = False) -> bytes:
    """5-bit values as bytes; ``pad`` zero-fills a trailing partial byte, else it is dropped."""
    return bytes(convert_bits(data, 5, 8, pad=pad))


def u5_to_int(data: Iterable[int]) -> int:
    """Big-endian 5-bit values as an integer."""
    value = 0
    for item in data:
        value = value << 5 | item
    return value


def int_to_u5(value: int, length: int | None = None) -> list[int]:
    """Big-endian 5-bit values of ``value``: as few as possible, or exactly ``length``."""
    if value < 0:
        raise ValueError(f"negative value {value}")
    if length is None:
        length = (value.bit_length() + 4) // 5
    elif value >> (5 * length):
        raise ValueError(f"value {value} does not fit in {5 * length} bits")
    return [(value >> 5 * (length - 1 - index)) & 31 for index in range(length)]
