"""ECDSA on secp256k1 (coincurve): the one signing primitive lnemu uses.

Signatures are 64-byte compact ``r || s``, low-S, over 32-byte digests, with
RFC 6979 nonces; ``verify`` never raises on garbage, it answers False.
"""
from __future__ import annotations

from functools import lru_cache

from coincurve import PrivateKey, PublicKey

from emulator.errors import LnemuError

PUBKEY_LEN = 33
SIGNATURE_LEN = 64
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SigningError(LnemuError, ValueError):
    """A private key or digest that cannot be signed with (a caller's mistake)."""

    code = "signing_error"


PARSED_MAX = 4096  # points kept parsed: basepoints, and recent commitments' keys
_parsed: dict[bytes, PublicKey | None] = {}  # used by each process's event-loop thread only


def parse_pubkey(key: bytes) -> PublicKey | None:
    """Parse a compressed public key, or None if it is not a point on the curve. Keys
    come back again and again (a channel's basepoints, a commitment's keys in every
    output policy and signature check): each is parsed once. coincurve's operations
    return new keys, so a parsed one is never changed."""
    try:
        return _parsed[key]
    except KeyError:
        pass
    except TypeError:  # unhashable: a bytearray, say
        key = bytes(key)
        if key in _parsed:
            return _parsed[key]
    parsed = None
    if len(key) == PUBKEY_LEN and key[0] in (2, 3):
        try:
            parsed = PublicKey(key)
        except ValueError:
            parsed = None
    _remember(key, parsed)
    return parsed


def known_pubkey(point: PublicKey) -> bytes:
    """The compressed encoding of a point computed here (so on the curve), remembered as
    parsed: the policies and signature checks that use a derived key do not parse it."""
    key = point.format(compressed=True)
    _remember(key, point)
    return key


def _remember(key: bytes, parsed: PublicKey | None) -> None:
    if len(_parsed) >= PARSED_MAX:  # the oldest goes (parsed again if it comes back)
        del _parsed[next(iter(_parsed))]
    _parsed[key] = parsed


def _der_int(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return b"\x02" + bytes([len(body)]) + body


def _compact_to_der(sig: bytes) -> bytes | None:
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < _SECP256K1_ORDER and 0 < s < _SECP256K1_ORDER):
        return None
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def _der_to_compact(der: bytes) -> bytes:
    # libsecp256k1 emits strict DER: 30 len 02 rlen r 02 slen s.
    r_len = der[3]
    r = int.from_bytes(der[4 : 4 + r_len], "big")
    s = int.from_bytes(der[6 + r_len :], "big")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@lru_cache(maxsize=1024)
def _private_key(privkey: bytes) -> PrivateKey:
    # PrivateKey() derives two public keys on creation: keep the keys we sign with often
    # (the funding key every commitment, one HTLC key for all HTLCs of a commitment)
    return PrivateKey(privkey)


def sign(privkey: bytes, msg32: bytes) -> bytes:
    """ECDSA-sign a 32-byte digest; returns a 64-byte compact low-S signature (r || s)."""
    if not isinstance(msg32, bytes) or len(msg32) != 32:
        raise SigningError("message to sign must be a 32-byte digest")
    if not isinstance(privkey, bytes) or len(privkey) != 32:
        raise SigningError("private key must be 32 bytes")
    try:
        der = _private_key(privkey).sign(msg32, hasher=None)  # RFC 6979 nonce, always low-S
    except (TypeError, ValueError) as exc:
        raise SigningError(f"cannot sign with this private key: {exc}") from exc
    return _der_to_compact(der)


def verify(pubkey: bytes, msg32: bytes, sig: bytes) -> bool:
    """True if ``sig`` is a valid 64-byte compact low-S signature by ``pubkey`` over msg32."""
    if not (isinstance(pubkey, bytes) and isinstance(msg32, bytes) and isinstance(sig, bytes)):
        return False
    if len(msg32) != 32 or len(sig) != SIGNATURE_LEN:
        return False
    key = parse_pubkey(pubkey)
    der = _compact_to_der(sig)
    if key is None or der is None:
        return False
    try:
        # libsecp256k1's verify rejects high-S signatures, so signatures are not malleable.
        return key.verify(der, msg32, hasher=None)
    except ValueError:
        return False
