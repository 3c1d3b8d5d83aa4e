"""BigSize (BOLT 1 Appendix A) against the spec vectors."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.crypto.bigsize import BigSizeError, decode_bigsize, encode_bigsize
from emulator.errors import DecodeError
from tests.conftest import load_vector

_VECTORS = load_vector("bolt01-bigsize.json")
_VALID_DECODING = [case for case in _VECTORS["decoding"] if "exp_error" not in case]
_INVALID_DECODING = [case for case in _VECTORS["decoding"] if "exp_error" in case]


def _ids(cases: list[dict]) -> list[str]:
    return [case["name"] for case in cases]


@pytest.mark.parametrize("case", _VALID_DECODING, ids=_ids(_VALID_DECODING))
def test_decode_valid(case: dict) -> None:
    data = bytes.fromhex(case["bytes"])
    assert decode_bigsize(data) == (case["value"], len(data))


@pytest.mark.parametrize("case", _INVALID_DECODING, ids=_ids(_INVALID_DECODING))
def test_decode_invalid(case: dict) -> None:
    with pytest.raises(BigSizeError) as excinfo:
        decode_bigsize(bytes.fromhex(case["bytes"]))
    assert case["exp_error"].lower() in str(excinfo.value).lower()
    assert isinstance(excinfo.value, DecodeError)


@pytest.mark.parametrize("case", _VECTORS["encoding"], ids=_ids(_VECTORS["encoding"]))
def test_encode(case: dict) -> None:
    assert encode_bigsize(case["value"]).hex() == case["bytes"]


def test_decode_at_offset() -> None:
    assert decode_bigsize(b"\xaa\xfd\x01\x00\xbb", 1) == (0x100, 4)


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_encode_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_bigsize(value)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_round_trip(value: int) -> None:
    encoded = encode_bigsize(value)
    assert decode_bigsize(encoded) == (value, len(encoded))
