"""Keys that derive from a scenario's seed and a peer's name.

A replay with the same seed gives the same node ids and wallet keys, so that runs
can be compared. Keys not tied to a seed (``lnemu peer start`` without one) are
random and kept in the peer's data directory.
"""
from __future__ import annotations

import hashlib
import hmac

import coincurve

_ORDER = 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141


def _to_secret(material: bytes) -> bytes:
    """Map 32 bytes of key material to a valid secp256k1 secret."""
    value = int.from_bytes(material, "big") % (_ORDER - 1) + 1
    return value.to_bytes(32, "big")


def node_secret(seed: int | str, name: str) -> bytes:
    """The node secret of peer ``name`` in a run with ``seed``."""
    return _to_secret(hashlib.sha256(f"lnemu/node/{seed}/{name}".encode()).digest())


def child_secret(parent_secret: bytes, purpose: str, index: int = 0) -> bytes:
    """A secret derived from ``parent_secret`` for ``purpose`` (e.g. "wallet") and index."""
    mac = hmac.new(parent_secret, f"{purpose}/{index}".encode(), hashlib.sha256)
    return _to_secret(mac.digest())


def pubkey(secret: bytes) -> bytes:
    """The 33-byte compressed public key of ``secret``."""
    return coincurve.PrivateKey(secret).public_key.format(compressed=True)


def wallet_secret(node_secret_: bytes, index: int) -> bytes:
    """The secret of a peer's ``index``-th on-chain wallet key."""
    return child_secret(node_secret_, "wallet", index)


def miner_secret(seed: int | str) -> bytes:
    """The key that receives the chain's block fees."""
    return node_secret(seed, "__miner__")
