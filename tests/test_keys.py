"""BOLT 3 key derivation against Appendix E."""
from __future__ import annotations

import pytest

from emulator.crypto.keys import (
    CURVE_ORDER,
    KeyDerivationError,
    derive_privkey,
    derive_pubkey,
    derive_revocation_privkey,
    derive_revocation_pubkey,
    per_commitment_point,
    pubkey_from_privkey,
)
from emulator.errors import LnemuError
from tests.conftest import load_vector

_V = load_vector("bolt03-appendixE-keyderivation.json")


def _b(name: str) -> bytes:
    return bytes.fromhex(_V[name])


# Each Appendix E output: (vector name, how to compute it from the vector's inputs).
_CASES = {
    "base_point": lambda: pubkey_from_privkey(_b("base_secret")),
    "per_commitment_point": lambda: per_commitment_point(_b("per_commitment_secret")),
    "localpubkey": lambda: derive_pubkey(_b("base_point"), _b("per_commitment_point")),
    "localprivkey": lambda: derive_privkey(_b("base_secret"), _b("per_commitment_point")),
    "revocationpubkey": lambda: derive_revocation_pubkey(
        _b("base_point"), _b("per_commitment_point")
    ),
    # the same key, faster, by the side that knows the basepoint's or the point's secret
    "revocationpubkey by the counterparty": lambda: derive_revocation_pubkey(
        _b("base_point"), _b("per_commitment_point"), basepoint_secret=_b("base_secret")
    ),
    "revocationpubkey by the holder": lambda: derive_revocation_pubkey(
        _b("base_point"), _b("per_commitment_point"),
        commitment_secret=_b("per_commitment_secret"),
    ),
    "revocationprivkey": lambda: derive_revocation_privkey(
        _b("base_secret"), _b("per_commitment_secret")
    ),
}


@pytest.mark.parametrize("name", list(_CASES), ids=list(_CASES))
def test_appendix_e(name: str) -> None:
    assert _CASES[name]().hex() == _V[name.split(" by ")[0]]


def test_derived_privkeys_match_derived_pubkeys() -> None:
    local_privkey = derive_privkey(_b("base_secret"), _b("per_commitment_point"))
    assert pubkey_from_privkey(local_privkey).hex() == _V["localpubkey"]
    revocation_privkey = derive_revocation_privkey(_b("base_secret"), _b("per_commitment_secret"))
    assert pubkey_from_privkey(revocation_privkey).hex() == _V["revocationpubkey"]


_GOOD_POINT = _V["base_point"]
_BAD_POINTS = {
    "short": _GOOD_POINT[:-2],
    "uncompressed prefix": "04" + _GOOD_POINT[2:],
    "not on curve": "02" + "00" * 32,
    "x above field": "02" + "ff" * 32,
}


@pytest.mark.parametrize("point_hex", list(_BAD_POINTS.values()), ids=list(_BAD_POINTS))
def test_bad_points_rejected(point_hex: str) -> None:
    point = bytes.fromhex(point_hex)
    with pytest.raises(KeyDerivationError, match="basepoint"):
        derive_pubkey(point, _b("per_commitment_point"))
    with pytest.raises(KeyDerivationError, match="per_commitment_point"):
        derive_revocation_pubkey(_b("base_point"), point)


_BAD_SECRETS = {
    "zero": bytes(32),
    "curve order": CURVE_ORDER.to_bytes(32, "big"),
    "short": bytes(31),
    "long": bytes(32) + b"\x01",
}


@pytest.mark.parametrize("secret", list(_BAD_SECRETS.values()), ids=list(_BAD_SECRETS))
def test_bad_secrets_rejected(secret: bytes) -> None:
    with pytest.raises(KeyDerivationError, match="privkey"):
        pubkey_from_privkey(secret)
    with pytest.raises(KeyDerivationError, match="per_commitment_secret"):
        derive_revocation_privkey(_b("base_secret"), secret)
    with pytest.raises(KeyDerivationError, match="basesecret"):
        derive_privkey(secret, _b("per_commitment_point"))
    with pytest.raises(KeyDerivationError, match="revocation_basepoint_secret"):
        derive_revocation_privkey(secret, _b("per_commitment_secret"))


def test_error_is_typed() -> None:
    assert issubclass(KeyDerivationError, LnemuError)
    assert KeyDerivationError.code == "bad_key"


def test_a_derived_key_is_known_as_parsed_and_the_known_keys_are_bounded(monkeypatch):
    from emulator.crypto import ecdsa

    monkeypatch.setattr(ecdsa, "PARSED_MAX", 8)
    monkeypatch.setattr(ecdsa, "_parsed", {})
    key = derive_pubkey(_b("base_point"), _b("per_commitment_point"))
    assert key == _b("localpubkey")

    def no_parsing(data):
        raise AssertionError("a derived key was parsed again")
    monkeypatch.setattr(ecdsa, "PublicKey", no_parsing)
    assert ecdsa.parse_pubkey(key).format() == key  # the point computed, kept
    monkeypatch.undo()
    monkeypatch.setattr(ecdsa, "PARSED_MAX", 8)
    monkeypatch.setattr(ecdsa, "_parsed", {})
    assert ecdsa.parse_pubkey(b"\x05" * 33) is None  # not a point: still refused
    assert ecdsa.parse_pubkey(bytearray(key)).format() == key  # any bytes-like
    for n in range(1, 20):
        pubkey_from_privkey(n.to_bytes(32, "big"))
    assert len(ecdsa._parsed) <= 8
