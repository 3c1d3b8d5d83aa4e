"""BOLT 4 Sphinx onions: build, peel, and the error onion that travels back.

The forward packet is ``version (1) || ephemeral pubkey (33) || hop_payloads
(1300) || hmac (32)`` = 1366 bytes. Each hop's slot in ``hop_payloads`` is
``bigsize(len) || payload || next hmac``; an all-zero next hmac marks the final
hop. Errors travel back as ``hmac || u16 len || failure_message || u16 pad_len
|| pad``, re-obfuscated with each hop's ``ammag`` stream on the way.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from emulator.crypto.bigsize import BigSizeError, decode_bigsize, encode_bigsize
from emulator.crypto.failures import FailureCode
from emulator.crypto.keys import CURVE_ORDER as _CURVE_ORDER
from emulator.errors import DecodeError, LnemuError

ONION_VERSION = 0
PUBKEY_LEN = 33
HMAC_LEN = 32
HOP_PAYLOADS_LEN = 1300
ONION_LEN = 1 + PUBKEY_LEN + HOP_PAYLOADS_LEN + HMAC_LEN  # 1366
MAX_HOPS = 27
# BOLT 4: no TLV payload is shorter than 2 bytes, so lengths 0 and 1 are reserved.
MIN_PAYLOAD_LEN = 2
# BOLT 4: the erring node pads failure_len + pad_len to (at least, and should be) 256.
ERROR_MESSAGE_AREA = 256
_ERROR_HEADER_LEN = HMAC_LEN + 2 + 2  # hmac, u16 failure_len, u16 pad_len
_ZERO_HMAC = bytes(HMAC_LEN)
# ChaCha20 with the BOLT's 96-bit zero nonce: cryptography wants a 16-byte nonce
# made of a 4-byte little-endian block counter (0) and the 12-byte nonce.
_CHACHA_NONCE = bytes(16)


class SphinxError(LnemuError):
    """A caller passed keys or inputs that cannot make an onion or error packet."""

    code = "sphinx"


class OnionTooLargeError(SphinxError):
    """A route with more than 27 hops, or payloads that overflow the 1300 bytes."""

    code = "onion_too_large"


class OnionPeelError(DecodeError):
    """An onion this node cannot peel; ``failure_code`` is what to reply with.

    For BADONION codes the forwarding node replies ``update_fail_malformed_htlc``
    with ``sha256_of_onion``; otherwise (a bad payload behind a valid HMAC)
    ``shared_secret`` is set so it can build an encrypted error.
    """

    code = "bad_onion"

    def __init__(
        self,
        message: str,
        failure_code: FailureCode,
        sha256_of_onion: bytes,
        shared_secret: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.failure_code = failure_code
        self.sha256_of_onion = sha256_of_onion
        self.shared_secret = shared_secret


class ErrorPacketError(DecodeError):
    """An error packet that no hop authenticates, or whose contents are malformed."""

    code = "bad_error_packet"


@dataclass(frozen=True)
class PeeledOnion:
    """What one hop learns from an onion: its payload and the onion to pass on."""

    payload: bytes
    next_onion: bytes | None
    shared_secret: bytes

    @property
    def is_final(self) -> bool:
        """True if this hop is the recipient (the next HMAC was all zero)."""
        return self.next_onion is None


# --- primitives ---------------------------------------------------------------


def _derive_key(key_type: bytes, shared_secret: bytes) -> bytes:
    """BOLT 4 key generation: HMAC-SHA256 keyed by the key-type name."""
    return hmac.digest(key_type, shared_secret, "sha256")


def _stream(key: bytes, length: int) -> bytes:
    """``length`` bytes of ChaCha20 keystream (zero nonce) for ``key``."""
    encryptor = Cipher(algorithms.ChaCha20(key, _CHACHA_NONCE), mode=None).encryptor()
    return encryptor.update(bytes(length))


def _xor(data: bytes, stream: bytes) -> bytes:
    """XOR ``data`` with the first ``len(data)`` bytes of ``stream``."""
    size = len(data)
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream[:size], "big")
    return mixed.to_bytes(size, "big")


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _blinding_factor(ephemeral_pubkey: bytes, shared_secret: bytes) -> bytes:
    """BOLT 4: the next ephemeral key is this one times SHA256(pubkey || secret)."""
    return hashlib.sha256(ephemeral_pubkey + shared_secret).digest()


def _check_len(name: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise SphinxError(f"{name} must be {expected} bytes, got {len(value)}")


def _scalar(name: str, secret: bytes) -> int:
    _check_len(name, secret, 32)
    value = int.from_bytes(secret, "big")
    if not 0 < value < _CURVE_ORDER:
        raise SphinxError(f"{name} is not a valid secp256k1 private key")
    return value


@lru_cache(maxsize=16)
def _node_key(secret: bytes) -> PrivateKey:
    """The node's key object, made once (making one derives two public keys)."""
    _scalar("node_privkey", secret)
    return PrivateKey(secret)


def _route_shared_secrets(session_key: bytes, hop_pubkeys: list[bytes]) -> list[bytes]:
    """The origin's view: each hop's shared secret, blinding the ephemeral key as it goes
    (the ephemeral secret is blinded as a number: one point multiplication less a hop)."""
    ephemeral = _scalar("session_key", session_key)
    secrets: list[bytes] = []
    for index, pubkey in enumerate(hop_pubkeys):
        _check_len(f"hop {index} pubkey", pubkey, PUBKEY_LEN)
        key = ephemeral.to_bytes(32, "big")
        try:
            # ECDH as BOLT 4 (and libsecp256k1) define it: SHA256 of the compressed point
            shared_secret = hashlib.sha256(PublicKey(pubkey).multiply(key).format()).digest()
        except ValueError as exc:
            raise SphinxError(f"hop {index} pubkey is not a valid secp256k1 point") from exc
        secrets.append(shared_secret)
        if index + 1 < len(hop_pubkeys):
            blinding = _blinding_factor(PublicKey.from_valid_secret(key).format(), shared_secret)
            ephemeral = ephemeral * int.from_bytes(blinding, "big") % _CURVE_ORDER
            if ephemeral == 0:
                raise SphinxError(f"blinding at hop {index} gives an invalid key")
    return secrets


# --- building -----------------------------------------------------------------


def _framed_len(payload_len: int) -> int:
    """Bytes a payload takes in hop_payloads: BigSize prefix, payload, next HMAC."""
    return len(encode_bigsize(payload_len)) + payload_len + HMAC_LEN


def remaining_payload_room(payload_lengths: list[int]) -> int:
    """Free bytes left in the 1300-byte hop_payloads after these payloads (negative: overflow)."""
    return HOP_PAYLOADS_LEN - sum(_framed_len(length) for length in payload_lengths)


def max_payload_len(room: int) -> int:
    """Longest payload whose BigSize prefix, bytes and HMAC fit in ``room`` bytes (0 if none)."""
    longest = room - HMAC_LEN - 1
    while longest > 0 and _framed_len(longest) > room:
        longest -= 1
    return max(longest, 0)


def _check_route(hops: list[tuple[bytes, bytes]]) -> None:
    if not hops:
        raise SphinxError("an onion needs at least one hop")
    if len(hops) > MAX_HOPS:
        raise OnionTooLargeError(f"route has {len(hops)} hops; an onion holds at most {MAX_HOPS}")
    for index, (_, payload) in enumerate(hops):
        if len(payload) < MIN_PAYLOAD_LEN:
            raise SphinxError(
                f"hop {index} payload has {len(payload)} bytes; BOLT 4 reserves lengths below "
                f"{MIN_PAYLOAD_LEN}"
            )
    room = remaining_payload_room([len(payload) for _, payload in hops])
    if room < 0:
        raise OnionTooLargeError(
            f"hop payloads need {HOP_PAYLOADS_LEN - room} bytes with their length prefixes and "
            f"HMACs; the onion's hop_payloads hold {HOP_PAYLOADS_LEN}"
        )


def _generate_filler(shared_secrets: list[bytes], framed_lens: list[int]) -> bytes:
    """The tail each forwarding hop's shift-and-XOR leaves at the final hop's hop_payloads."""
    filler = b""
    for shared_secret, framed_len in zip(shared_secrets, framed_lens, strict=True):
        # This hop appends zeros and XORs its rho stream; the filler so far is the tail
        # of the 1300 bytes it receives, so it meets the stream at 1300 - len(filler).
        stream = _stream(_derive_key(b"rho", shared_secret), HOP_PAYLOADS_LEN + framed_len)
        filler = _xor(filler + bytes(framed_len), stream[HOP_PAYLOADS_LEN - len(filler) :])
    return filler


def build_onion(
    session_key: bytes, hops: list[tuple[bytes, bytes]], associated_data: bytes
) -> bytes:
    """Build the 1366-byte onion for ``hops`` of (node pubkey, payload without length prefix)."""
    _check_route(hops)
    shared_secrets = _route_shared_secrets(session_key, [pubkey for pubkey, _ in hops])
    framed_lens = [_framed_len(len(payload)) for _, payload in hops]
    filler = _generate_filler(shared_secrets[:-1], framed_lens[:-1])
    # Start from deterministic pseudo-random bytes so unused space looks like the rest.
    routing_info = _stream(_derive_key(b"pad", session_key), HOP_PAYLOADS_LEN)
    next_hmac = _ZERO_HMAC
    for index in reversed(range(len(hops))):
        payload = hops[index][1]
        shared_secret = shared_secrets[index]
        framed = encode_bigsize(len(payload)) + payload + next_hmac
        routing_info = framed + routing_info[: HOP_PAYLOADS_LEN - len(framed)]
        routing_info = _xor(
            routing_info, _stream(_derive_key(b"rho", shared_secret), HOP_PAYLOADS_LEN)
        )
        if index == len(hops) - 1:
            routing_info = routing_info[: HOP_PAYLOADS_LEN - len(filler)] + filler
        next_hmac = _hmac(_derive_key(b"mu", shared_secret), routing_info + associated_data)
    ephemeral_pubkey = PublicKey.from_valid_secret(session_key).format()
    return bytes([ONION_VERSION]) + ephemeral_pubkey + routing_info + next_hmac


# --- peeling ------------------------------------------------------------------


def _onion_shared_secret(onion: bytes, node_key: PrivateKey, onion_hash: bytes) -> bytes:
    """Check length, version and ephemeral key; return the ECDH shared secret."""
    if len(onion) != ONION_LEN:
        # Only a 1366-byte packet is a version-0 onion.
        raise OnionPeelError(
            f"onion has {len(onion)} bytes; a version-0 onion has {ONION_LEN}",
            FailureCode.INVALID_ONION_VERSION,
            onion_hash,
        )
    if onion[0] != ONION_VERSION:
        raise OnionPeelError(
            f"onion version {onion[0]} is not {ONION_VERSION}",
            FailureCode.INVALID_ONION_VERSION,
            onion_hash,
        )
    try:
        return node_key.ecdh(onion[1 : 1 + PUBKEY_LEN])
    except ValueError as exc:
        raise OnionPeelError(
            "onion ephemeral key is not a valid secp256k1 point",
            FailureCode.INVALID_ONION_KEY,
            onion_hash,
        ) from exc


def _read_hop_payload(plain: bytes, onion_hash: bytes, shared_secret: bytes) -> tuple[bytes, int]:
    """Parse ``bigsize(len) || payload`` at the start; return (payload, end offset)."""
    try:
        length, offset = decode_bigsize(plain)
    except BigSizeError as exc:
        raise OnionPeelError(
            f"hop payload length: {exc}",
            FailureCode.INVALID_ONION_PAYLOAD,
            onion_hash,
            shared_secret,
        ) from exc
    if length < MIN_PAYLOAD_LEN or offset + length + HMAC_LEN > HOP_PAYLOADS_LEN:
        raise OnionPeelError(
            f"hop payload length {length} is reserved or does not fit in {HOP_PAYLOADS_LEN} bytes",
            FailureCode.INVALID_ONION_PAYLOAD,
            onion_hash,
            shared_secret,
        )
    return plain[offset : offset + length], offset + length


def _next_ephemeral_key(ephemeral_pubkey: bytes, shared_secret: bytes, onion_hash: bytes) -> bytes:
    blinding = _blinding_factor(ephemeral_pubkey, shared_secret)
    try:
        return PublicKey(ephemeral_pubkey).multiply(blinding).format()
    except ValueError as exc:
        raise OnionPeelError(
            "cannot blind the ephemeral key for the next hop",
            FailureCode.INVALID_ONION_KEY,
            onion_hash,
        ) from exc


def peel_onion(onion: bytes, node_privkey: bytes, associated_data: bytes) -> PeeledOnion:
    """Peel one layer with this node's key: its payload and the onion for the next hop."""
    node_key = _node_key(node_privkey)
    onion_hash = hashlib.sha256(onion).digest()
    shared_secret = _onion_shared_secret(onion, node_key, onion_hash)
    ephemeral_pubkey = onion[1 : 1 + PUBKEY_LEN]
    routing_info = onion[1 + PUBKEY_LEN : 1 + PUBKEY_LEN + HOP_PAYLOADS_LEN]
    packet_hmac = onion[-HMAC_LEN:]
    expected = _hmac(_derive_key(b"mu", shared_secret), routing_info + associated_data)
    if not hmac.compare_digest(expected, packet_hmac):
        raise OnionPeelError(
            "onion HMAC does not match", FailureCode.INVALID_ONION_HMAC, onion_hash
        )
    # Append 1300 zero bytes and XOR 2*1300 bytes of stream: our slot comes out in
    # the clear and the appended zeros become the padding the next hop will see.
    rho_stream = _stream(_derive_key(b"rho", shared_secret), 2 * HOP_PAYLOADS_LEN)
    plain = _xor(routing_info + bytes(HOP_PAYLOADS_LEN), rho_stream)
    payload, payload_end = _read_hop_payload(plain, onion_hash, shared_secret)
    next_hmac = plain[payload_end : payload_end + HMAC_LEN]
    if next_hmac == _ZERO_HMAC:
        return PeeledOnion(payload=payload, next_onion=None, shared_secret=shared_secret)
    slot_end = payload_end + HMAC_LEN
    next_onion = (
        bytes([ONION_VERSION])
        + _next_ephemeral_key(ephemeral_pubkey, shared_secret, onion_hash)
        + plain[slot_end : slot_end + HOP_PAYLOADS_LEN]
        + next_hmac
    )
    return PeeledOnion(payload=payload, next_onion=next_onion, shared_secret=shared_secret)


# --- error onions -------------------------------------------------------------


def build_error(shared_secret: bytes, failure_message: bytes) -> bytes:
    """The failing hop's error packet: authenticated with ``um``, padded, obfuscated with ``ammag``."""
    _check_len("shared_secret", shared_secret, 32)
    if len(failure_message) > 0xFFFF:
        raise OnionTooLargeError(
            f"failure_message has {len(failure_message)} bytes; its u16 length allows 65535"
        )
    pad_len = max(0, ERROR_MESSAGE_AREA - len(failure_message))
    body = (
        len(failure_message).to_bytes(2, "big")
        + failure_message
        + pad_len.to_bytes(2, "big")
        + bytes(pad_len)
    )
    packet = _hmac(_derive_key(b"um", shared_secret), body) + body
    return wrap_error(shared_secret, packet)


def wrap_error(shared_secret: bytes, packet: bytes) -> bytes:
    """Obfuscate an error packet with this hop's ``ammag`` stream (every hop on the way back)."""
    _check_len("shared_secret", shared_secret, 32)
    return _xor(packet, _stream(_derive_key(b"ammag", shared_secret), len(packet)))


def decode_error(session_key: bytes, hop_pubkeys: list[bytes], packet: bytes) -> tuple[int, bytes]:
    """At the origin: find which hop failed; return (hop index, failure_message)."""
    if len(packet) < _ERROR_HEADER_LEN:
        raise ErrorPacketError(
            f"error packet has {len(packet)} bytes; needs at least {_ERROR_HEADER_LEN}"
        )
    origin: tuple[int, bytes] | None = None
    # Peel every hop's layer even after a match, so the work does not reveal the index.
    for index, shared_secret in enumerate(_route_shared_secrets(session_key, hop_pubkeys)):
        packet = wrap_error(shared_secret, packet)
        expected = _hmac(_derive_key(b"um", shared_secret), packet[HMAC_LEN:])
        if origin is None and hmac.compare_digest(expected, packet[:HMAC_LEN]):
            origin = (index, packet)
    if origin is None:
        raise ErrorPacketError(
            f"no hop of the {len(hop_pubkeys)}-hop route authenticates the error packet"
        )
    index, plain = origin
    failure_len = int.from_bytes(plain[HMAC_LEN : HMAC_LEN + 2], "big")
    start = HMAC_LEN + 2
    if start + failure_len + 2 > len(plain):
        raise ErrorPacketError(
            f"hop {index} error claims a {failure_len}-byte failure_message in a "
            f"{len(plain)}-byte packet"
        )
    return index, plain[start : start + failure_len]
