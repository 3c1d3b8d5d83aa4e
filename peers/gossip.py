"""BOLT 7 gossip: build, sign and verify channel and node announcements and channel updates.

Pure logic, no I/O. Messages are the msgpack maps of :mod:`emulator.messages`. A gossip
signature covers :func:`signing_digest`: the double SHA-256 of the message type name
followed by the canonical msgpack of the body without its signature fields (keys sorted).
This stands in for BOLT 7's "hash of the message after the signatures", and the type
name keeps a signature over one kind of message from being replayed as another.
"""
from __future__ import annotations

import hashlib
from typing import Any

import coincurve
import msgpack

from emulator.envelope import EnvelopeError, check_body
from emulator.errors import DecodeError
from emulator.identity import pubkey
from emulator.policy import SigningError, sign, verify

ZERO_SIGNATURE = bytes(64)
MAX_ALIAS_BYTES = 32  # BOLT 7: a 32-byte alias field
RGB_COLOR_LEN = 3

# channel_update message_flags and channel_flags bits (BOLT 7).
MESSAGE_FLAG_MUST_BE_ONE = 1 << 0
MESSAGE_FLAG_DONT_FORWARD = 1 << 1
CHANNEL_FLAG_DIRECTION = 1 << 0
CHANNEL_FLAG_DISABLE = 1 << 1

SIGNATURE_FIELDS: dict[str, tuple[str, ...]] = {
    "channel_announcement": (
        "node_signature_1", "node_signature_2", "bitcoin_signature_1", "bitcoin_signature_2",
    ),
    "channel_update": ("signature",),
    "node_announcement": ("signature",),
}


class GossipError(DecodeError):
    """A gossip message that cannot be accepted; ``code`` says why."""

    code = "bad_gossip"


class MalformedGossip(GossipError):
    """A field that is missing, of the wrong kind or out of range."""

    code = "malformed_gossip"


class BadNodeSignature(GossipError):
    """A node_signature (channel_announcement) or node_announcement signature that fails."""

    code = "bad_node_signature"


class BadBitcoinSignature(GossipError):
    """A bitcoin_signature by a funding key that fails."""

    code = "bad_bitcoin_signature"


class BadUpdateSignature(GossipError):
    """A channel_update signature that fails against the announcing node's key."""

    code = "bad_update_signature"


class UnknownChannel(GossipError):
    """A channel_update for a short_channel_id not in the graph (caller may hold it)."""

    code = "unknown_channel"


class UnknownNode(GossipError):
    """A node_announcement for a node with no announced channel (caller may hold it)."""

    code = "unknown_node"


class StaleUpdate(GossipError):
    """A channel_update or node_announcement not newer than the one already held."""

    code = "stale_update"


class ConflictingUpdate(StaleUpdate):
    """Same timestamp as the one held but different content (BOLT 7: MAY blacklist)."""

    code = "conflicting_update"


class ConflictingAnnouncement(GossipError):
    """A channel_announcement for a known short_channel_id but other nodes."""

    code = "conflicting_announcement"


# --- helpers --------------------------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _canonical(value: Any) -> Any:
    """Sort map keys recursively so that equal bodies always pack to the same bytes."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def check_fields(type_name: str, body: Any) -> dict[str, Any]:
    """Check ``body`` against the schema of ``type_name``; raise MalformedGossip if wrong."""
    try:
        return check_body(type_name, body)
    except EnvelopeError as exc:
        raise MalformedGossip(str(exc)) from None


def _is_point(key: bytes) -> bool:
    if len(key) != 33 or key[0] not in (2, 3):
        return False
    try:
        coincurve.PublicKey(key)
    except ValueError:
        return False
    return True


def _check_point(key: bytes, where: str) -> None:
    if not _is_point(key):
        raise MalformedGossip(f"{where}: not a valid compressed secp256k1 point")


def unsigned_fields(type_name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body without its signature fields (what the signatures cover)."""
    skip = SIGNATURE_FIELDS[type_name]
    return {key: value for key, value in body.items() if key not in skip}


def signing_digest(type_name: str, body: dict[str, Any]) -> bytes:
    """sha256d(msgpack(type_name) || msgpack(body minus signature fields, keys sorted))."""
    if type_name not in SIGNATURE_FIELDS:
        raise MalformedGossip(f"{type_name!r} is not a signed gossip message")
    if not isinstance(body, dict):
        raise MalformedGossip(f"{type_name}: body must be a map")
    try:
        signed = _canonical(unsigned_fields(type_name, body))
        packed = msgpack.packb(type_name, use_bin_type=True)
        packed += msgpack.packb(signed, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise MalformedGossip(f"{type_name}: body cannot be packed: {exc}") from None
    return _sha256d(packed)


def _sign(secret: bytes, digest: bytes) -> bytes:
    try:
        return sign(secret, digest)
    except SigningError as exc:
        raise MalformedGossip(f"cannot sign: {exc}") from None


def _pubkey_of(secret: bytes) -> bytes:
    try:
        return pubkey(secret)
    except (TypeError, ValueError) as exc:
        raise MalformedGossip(f"not a usable secret key: {exc}") from None


def format_short_channel_id(short_channel_id: int) -> str:
    """BOLT 7's human form ``block x tx x output``, e.g. ``539268x845x1``."""
    block = short_channel_id >> 40
    tx_index = (short_channel_id >> 16) & 0xFFFFFF
    return f"{block}x{tx_index}x{short_channel_id & 0xFFFF}"


def fee_msat(fee_base_msat: int, fee_proportional_millionths: int, amount_msat: int) -> int:
    """BOLT 7 forwarding fee for ``amount_msat`` (the proportional part rounds down)."""
    return fee_base_msat + amount_msat * fee_proportional_millionths // 1_000_000


# --- channel_announcement --------------------------------------------------------------


def channel_announcement_body(
    short_channel_id: int, node_id_a: bytes, node_id_b: bytes,
    bitcoin_key_a: bytes, bitcoin_key_b: bytes, chain_hash: bytes, features: int = 0,
) -> dict[str, Any]:
    """An unsigned channel_announcement; node_id_1 is the lesser key (BOLT 7)."""
    if node_id_a == node_id_b:
        raise MalformedGossip("a channel needs two distinct node ids")
    if node_id_b < node_id_a:
        node_id_a, node_id_b = node_id_b, node_id_a
        bitcoin_key_a, bitcoin_key_b = bitcoin_key_b, bitcoin_key_a
    body = {
        "node_signature_1": ZERO_SIGNATURE, "node_signature_2": ZERO_SIGNATURE,
        "bitcoin_signature_1": ZERO_SIGNATURE, "bitcoin_signature_2": ZERO_SIGNATURE,
        "features": features, "chain_hash": chain_hash, "short_channel_id": short_channel_id,
        "node_id_1": node_id_a, "node_id_2": node_id_b,
        "bitcoin_key_1": bitcoin_key_a, "bitcoin_key_2": bitcoin_key_b,
    }
    _check_announcement_fields(body)
    return body


def _check_announcement_fields(body: Any) -> None:
    check_fields("channel_announcement", body)
    for key in ("node_id_1", "node_id_2", "bitcoin_key_1", "bitcoin_key_2"):
        _check_point(body[key], f"channel_announcement.{key}")
    if not body["node_id_1"] < body["node_id_2"]:
        raise MalformedGossip("channel_announcement: node_id_1 must be less than node_id_2")


def _slot(body: dict[str, Any], node_id: bytes) -> int:
    """1 or 2: which side of the announcement ``node_id`` is."""
    for side in (1, 2):
        if body[f"node_id_{side}"] == node_id:
            return side
    raise MalformedGossip(f"node {node_id.hex()} is not an end of this channel")


def announcement_signatures(
    body: dict[str, Any], node_secret: bytes, funding_secret: bytes
) -> tuple[bytes, bytes]:
    """Our (node_signature, bitcoin_signature) over the announcement, for announcement_signatures."""
    _check_announcement_fields(body)
    side = _slot(body, _pubkey_of(node_secret))
    if body[f"bitcoin_key_{side}"] != _pubkey_of(funding_secret):
        raise MalformedGossip(f"funding key is not bitcoin_key_{side} of the announcement")
    digest = signing_digest("channel_announcement", body)
    return _sign(node_secret, digest), _sign(funding_secret, digest)


def complete_channel_announcement(
    body: dict[str, Any], node_id: bytes, node_sig: bytes, bitcoin_sig: bytes
) -> dict[str, Any]:
    """A copy of ``body`` with one side's signatures in its slots; both are checked first."""
    _check_announcement_fields(body)
    side = _slot(body, node_id)
    digest = signing_digest("channel_announcement", body)
    if not verify(node_id, digest, node_sig):
        raise BadNodeSignature(f"node_signature from node_id_{side} does not verify")
    if not verify(body[f"bitcoin_key_{side}"], digest, bitcoin_sig):
        raise BadBitcoinSignature(f"bitcoin_signature for bitcoin_key_{side} does not verify")
    completed = dict(body)
    completed[f"node_signature_{side}"] = node_sig
    completed[f"bitcoin_signature_{side}"] = bitcoin_sig
    return completed


def verify_channel_announcement(body: dict[str, Any]) -> None:
    """Check fields and all four signatures; raise a GossipError subclass if any fails."""
    _check_announcement_fields(body)
    digest = signing_digest("channel_announcement", body)
    for side in (1, 2):
        if not verify(body[f"node_id_{side}"], digest, body[f"node_signature_{side}"]):
            raise BadNodeSignature(f"channel_announcement: node_signature_{side} does not verify")
    for side in (1, 2):
        if not verify(body[f"bitcoin_key_{side}"], digest, body[f"bitcoin_signature_{side}"]):
            raise BadBitcoinSignature(
                f"channel_announcement: bitcoin_signature_{side} does not verify"
            )


# --- channel_update ---------------------------------------------------------------------


def make_channel_update(
    node_secret: bytes, short_channel_id: int, chain_hash: bytes, timestamp: int,
    direction: int, disabled: bool, cltv_expiry_delta: int, htlc_minimum_msat: int,
    htlc_maximum_msat: int, fee_base_msat: int, fee_proportional_millionths: int,
) -> dict[str, Any]:
    """A signed channel_update; ``direction`` is 0 if we are node_id_1, else 1."""
    if direction not in (0, 1):
        raise MalformedGossip(f"direction must be 0 or 1, got {direction!r}")
    if timestamp == 0:
        raise MalformedGossip("BOLT 7: a channel_update timestamp must be greater than 0")
    if htlc_minimum_msat > htlc_maximum_msat:
        raise MalformedGossip("htlc_minimum_msat must not exceed htlc_maximum_msat")
    body = {
        "signature": ZERO_SIGNATURE, "chain_hash": chain_hash,
        "short_channel_id": short_channel_id, "timestamp": timestamp,
        "message_flags": MESSAGE_FLAG_MUST_BE_ONE,
        "channel_flags": direction | (CHANNEL_FLAG_DISABLE if disabled else 0),
        "cltv_expiry_delta": cltv_expiry_delta, "htlc_minimum_msat": htlc_minimum_msat,
        "fee_base_msat": fee_base_msat, "fee_proportional_millionths": fee_proportional_millionths,
        "htlc_maximum_msat": htlc_maximum_msat,
    }
    check_fields("channel_update", body)
    body["signature"] = _sign(node_secret, signing_digest("channel_update", body))
    return body


def verify_channel_update(body: dict[str, Any], node_id: bytes) -> None:
    """Check fields and that ``node_id`` signed the update; raise a GossipError if not."""
    check_fields("channel_update", body)
    if not verify(node_id, signing_digest("channel_update", body), body["signature"]):
        raise BadUpdateSignature(
            f"channel_update for {format_short_channel_id(body['short_channel_id'])}"
            f" is not signed by {node_id.hex()}"
        )


def update_direction(body: dict[str, Any]) -> int:
    """0 if the update comes from node_id_1, 1 if from node_id_2."""
    return body["channel_flags"] & CHANNEL_FLAG_DIRECTION


def update_disabled(body: dict[str, Any]) -> bool:
    """True if the update marks its direction as disabled."""
    return bool(body["channel_flags"] & CHANNEL_FLAG_DISABLE)


def update_dont_forward(body: dict[str, Any]) -> bool:
    """True if the update is only for the channel peer (BOLT 7 ``dont_forward``)."""
    return bool(body["message_flags"] & MESSAGE_FLAG_DONT_FORWARD)


# --- node_announcement ------------------------------------------------------------------


def _check_node_fields(body: Any) -> None:
    check_fields("node_announcement", body)
    _check_point(body["node_id"], "node_announcement.node_id")
    if len(body["rgb_color"]) != RGB_COLOR_LEN:
        raise MalformedGossip(f"node_announcement.rgb_color must be {RGB_COLOR_LEN} bytes")
    try:
        alias_len = len(body["alias"].encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedGossip("node_announcement.alias is not valid UTF-8") from None
    if alias_len > MAX_ALIAS_BYTES:
        raise MalformedGossip(f"node_announcement.alias is longer than {MAX_ALIAS_BYTES} bytes")
    if not all(isinstance(address, str) for address in body["addresses"]):
        raise MalformedGossip("node_announcement.addresses must be a list of strings")


def make_node_announcement(
    node_secret: bytes, timestamp: int, alias: str, rgb_color: bytes,
    addresses: list[str], features: int = 0,
) -> dict[str, Any]:
    """A signed node_announcement for the node of ``node_secret``."""
    body = {
        "signature": ZERO_SIGNATURE, "features": features, "timestamp": timestamp,
        "node_id": _pubkey_of(node_secret), "rgb_color": rgb_color, "alias": alias,
        "addresses": list(addresses),
    }
    _check_node_fields(body)
    body["signature"] = _sign(node_secret, signing_digest("node_announcement", body))
    return body


def verify_node_announcement(body: dict[str, Any]) -> None:
    """Check fields and that node_id signed it; raise a GossipError subclass if not."""
    _check_node_fields(body)
    if not verify(body["node_id"], signing_digest("node_announcement", body), body["signature"]):
        raise BadNodeSignature(f"node_announcement of {body['node_id'].hex()} does not verify")
