"""BOLT 4 failure codes: values, flag properties, failure_message round trips."""

from __future__ import annotations

import pytest

from emulator.crypto.failures import (
    FailureCode,
    FailureMessageError,
    OnionRoutingFailure,
)
from emulator.errors import DecodeError, LnemuError

# The numeric values BOLT 4 "Failure Messages" lists, written out in hex.
BOLT4_VALUES = {
    "INVALID_REALM": 0x4001,
    "TEMPORARY_NODE_FAILURE": 0x2002,
    "PERMANENT_NODE_FAILURE": 0x6002,
    "REQUIRED_NODE_FEATURE_MISSING": 0x6003,
    "INVALID_ONION_VERSION": 0xC004,
    "INVALID_ONION_HMAC": 0xC005,
    "INVALID_ONION_KEY": 0xC006,
    "TEMPORARY_CHANNEL_FAILURE": 0x1007,
    "PERMANENT_CHANNEL_FAILURE": 0x4008,
    "REQUIRED_CHANNEL_FEATURE_MISSING": 0x4009,
    "UNKNOWN_NEXT_PEER": 0x400A,
    "AMOUNT_BELOW_MINIMUM": 0x100B,
    "FEE_INSUFFICIENT": 0x100C,
    "INCORRECT_CLTV_EXPIRY": 0x100D,
    "EXPIRY_TOO_SOON": 0x100E,
    "INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS": 0x400F,
    "FINAL_INCORRECT_CLTV_EXPIRY": 0x0012,
    "FINAL_INCORRECT_HTLC_AMOUNT": 0x0013,
    "CHANNEL_DISABLED": 0x1014,
    "EXPIRY_TOO_FAR": 0x0015,
    "INVALID_ONION_PAYLOAD": 0x4016,
    "MPP_TIMEOUT": 0x0017,
    "INVALID_ONION_BLINDING": 0xC018,
}


@pytest.mark.parametrize("name,value", sorted(BOLT4_VALUES.items()))
def test_failure_code_value(name: str, value: int) -> None:
    assert FailureCode[name] == value


def test_every_code_is_listed() -> None:
    assert {code.name for code in FailureCode} == set(BOLT4_VALUES)


@pytest.mark.parametrize(
    "code,badonion,perm,node,update",
    [
        (FailureCode.INVALID_ONION_HMAC, True, True, False, False),
        (FailureCode.PERMANENT_NODE_FAILURE, False, True, True, False),
        (FailureCode.TEMPORARY_NODE_FAILURE, False, False, True, False),
        (FailureCode.TEMPORARY_CHANNEL_FAILURE, False, False, False, True),
        (FailureCode.UNKNOWN_NEXT_PEER, False, True, False, False),
        (FailureCode.MPP_TIMEOUT, False, False, False, False),
    ],
)
def test_flag_properties(
    code: FailureCode, badonion: bool, perm: bool, node: bool, update: bool
) -> None:
    assert (code.is_badonion, code.is_perm, code.is_node, code.is_update) == (
        badonion,
        perm,
        node,
        update,
    )


def test_failure_round_trips_through_bytes() -> None:
    failure = OnionRoutingFailure(FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, b"\x00" * 12)
    wire = failure.to_bytes()
    assert wire[:2] == b"\x40\x0f"
    parsed = OnionRoutingFailure.from_bytes(wire)
    assert parsed.code is FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    assert parsed.data == b"\x00" * 12


def test_unknown_code_is_kept_as_int() -> None:
    parsed = OnionRoutingFailure.from_bytes(b"\x01\x23abc")
    assert parsed.code == 0x0123 and not isinstance(parsed.code, FailureCode)
    assert parsed.to_bytes() == b"\x01\x23abc"


def test_failure_is_a_typed_lnemu_error() -> None:
    failure = OnionRoutingFailure(FailureCode.TEMPORARY_NODE_FAILURE)
    assert isinstance(failure, LnemuError)
    assert "temporary_node_failure" in str(failure)


@pytest.mark.parametrize("wire", [b"", b"\x20"])
def test_short_failure_message_is_a_decode_error(wire: bytes) -> None:
    with pytest.raises(FailureMessageError) as info:
        OnionRoutingFailure.from_bytes(wire)
    assert isinstance(info.value, DecodeError)
