"""BOLT 3 key derivation: per-commitment keys and revocation keys on secp256k1.

Public keys are 33-byte compressed points, secrets are 32-byte big-endian scalars
in ``[1, n)``. Every bad input raises :class:`KeyDerivationError` naming the
argument at fault.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

from coincurve import PublicKey

from emulator.crypto.ecdsa import known_pubkey, parse_pubkey
from emulator.errors import LnemuError

# The order of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KeyDerivationError(LnemuError):
    """A key or secret that is malformed, off the curve, zero, or derives to an invalid key."""

    code = "bad_key"


def pubkey_from_privkey(privkey: bytes) -> bytes:
    """Return the 33-byte compressed public key of a 32-byte secret."""
    return _pubkey_of(privkey, "privkey")


def per_commitment_point(per_commitment_secret: bytes) -> bytes:
    """Return ``per_commitment_secret * G``, the point a peer reveals for each commitment."""
    return _pubkey_of(per_commitment_secret, "per_commitment_secret")


def derive_pubkey(basepoint: bytes, per_commitment_point: bytes) -> bytes:
    """BOLT 3: ``basepoint + SHA256(per_commitment_point || basepoint) * G``."""
    base = _parse_point(basepoint, "basepoint")
    _parse_point(per_commitment_point, "per_commitment_point")
    tweak = _sha256(per_commitment_point + basepoint)
    try:
        return known_pubkey(base.add(tweak))
    except ValueError as exc:
        raise KeyDerivationError(f"derived pubkey is invalid: {exc}") from exc


def derive_privkey(basesecret: bytes, per_commitment_point: bytes) -> bytes:
    """BOLT 3: ``basesecret + SHA256(per_commitment_point || basepoint) mod n``."""
    basepoint = _pubkey_of(basesecret, "basesecret")
    _parse_point(per_commitment_point, "per_commitment_point")
    tweak = _scalar(_sha256(per_commitment_point + basepoint))
    return _scalar_bytes((_scalar(basesecret) + tweak) % CURVE_ORDER, "derived privkey")


def derive_revocation_pubkey(revocation_basepoint: bytes, per_commitment_point: bytes, *,
                             basepoint_secret: bytes | None = None,
                             commitment_secret: bytes | None = None) -> bytes:
    """BOLT 3: ``R * SHA256(R || P) + P * SHA256(P || R)`` for basepoint R, commitment point P.

    A side that knows the secret of R (it is the counterparty) or of P (it holds the
    commitment) may pass it: that term becomes a multiplication of the generator, which
    is faster than of an arbitrary point. The key is the same either way."""
    revocation_point = _parse_point(revocation_basepoint, "revocation_basepoint")
    commitment_point = _parse_point(per_commitment_point, "per_commitment_point")
    basepoint_factor = _sha256(revocation_basepoint + per_commitment_point)
    commitment_factor = _sha256(per_commitment_point + revocation_basepoint)
    try:
        combined = PublicKey.combine_keys(
            [
                _times(revocation_point, basepoint_factor, basepoint_secret),
                _times(commitment_point, commitment_factor, commitment_secret),
            ]
        )
    except ValueError as exc:
        raise KeyDerivationError(f"derived revocation pubkey is invalid: {exc}") from exc
    return known_pubkey(combined)


def _times(point: PublicKey, factor: bytes, secret: bytes | None) -> PublicKey:
    """``point * factor``; as ``G * (secret * factor)`` when the point's secret is given."""
    if secret is None:
        return point.multiply(factor)
    _check_secret(secret, "secret")
    product = _scalar(secret) * _scalar(factor) % CURVE_ORDER
    return PublicKey.from_valid_secret(_scalar_bytes(product, "secret * factor"))


def derive_revocation_privkey(
    revocation_basepoint_secret: bytes, per_commitment_secret: bytes
) -> bytes:
    """BOLT 3: ``r * SHA256(R || P) + p * SHA256(P || R) mod n`` for the matching secrets r, p."""
    revocation_basepoint = _pubkey_of(revocation_basepoint_secret, "revocation_basepoint_secret")
    commitment_point = _pubkey_of(per_commitment_secret, "per_commitment_secret")
    basepoint_factor = _scalar(_sha256(revocation_basepoint + commitment_point))
    commitment_factor = _scalar(_sha256(commitment_point + revocation_basepoint))
    total = (
        _scalar(revocation_basepoint_secret) * basepoint_factor
        + _scalar(per_commitment_secret) * commitment_factor
    ) % CURVE_ORDER
    return _scalar_bytes(total, "derived revocation privkey")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _scalar(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _scalar_bytes(value: int, what: str) -> bytes:
    if value == 0:
        raise KeyDerivationError(f"{what} is zero")
    return value.to_bytes(32, "big")


def _pubkey_of(secret: bytes, what: str) -> bytes:
    _check_secret(secret, what)
    return _public_key(bytes(secret))


@lru_cache(maxsize=1024)
def _public_key(secret: bytes) -> bytes:
    # the same basepoint secrets come back for every commitment of a channel
    return known_pubkey(PublicKey.from_valid_secret(secret))


def _check_secret(secret: bytes, what: str) -> None:
    """Require a 32-byte scalar in [1, n)."""
    if not isinstance(secret, bytes | bytearray) or len(secret) != 32:
        raise KeyDerivationError(f"{what} must be 32 bytes, got {_describe(secret)}")
    value = _scalar(secret)
    if value == 0:
        raise KeyDerivationError(f"{what} is zero")
    if value >= CURVE_ORDER:
        raise KeyDerivationError(f"{what} is not below the curve order")


def _parse_point(point: bytes, what: str) -> PublicKey:
    """Require a 33-byte compressed point on secp256k1."""
    if not isinstance(point, bytes | bytearray) or len(point) != 33:
        raise KeyDerivationError(f"{what} must be 33 bytes (compressed), got {_describe(point)}")
    if point[0] not in (2, 3):
        raise KeyDerivationError(f"{what} has prefix {point[0]:#04x}, expected 0x02 or 0x03")
    parsed = parse_pubkey(bytes(point))
    if parsed is None:
        raise KeyDerivationError(f"{what} is not a point on secp256k1")
    return parsed


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__
