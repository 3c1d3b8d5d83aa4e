"""A channel's keys: basepoints, their secrets, and the per-commitment keys of BOLT 3.

Each side of a channel has five basepoints (funding, revocation, payment, delayed payment,
HTLC) and a shachain seed, all derived from its node secret and a channel index. Every
commitment then gets its own keys, tweaked with the holder's per-commitment point.
``option_static_remotekey`` is assumed: ``to_remote`` pays the untweaked payment basepoint.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from emulator import identity
from emulator.crypto.keys import (
    derive_privkey,
    derive_pubkey,
    derive_revocation_privkey,
    derive_revocation_pubkey,
    pubkey_from_privkey,
)
from emulator.crypto.keys import per_commitment_point as point_of_secret
from emulator.crypto.shachain import generate_from_seed, index_for_commitment
from emulator.errors import DecodeError, LnemuError

PUBKEY_LEN = 33


class ChannelKeyError(LnemuError):
    """A channel key, secret or derivation input that is malformed."""

    code = "channel_key_error"


class BasepointsWireError(ChannelKeyError, DecodeError):
    """A basepoints map (from a peer or the store) that does not parse."""

    code = "bad_basepoints"


@dataclass(frozen=True)
class Basepoints:
    """One side's public basepoints, as sent in ``open_channel``/``accept_channel``."""

    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes

    def to_wire(self) -> dict[str, bytes]:
        """The basepoints as a plain map keyed by their BOLT 2 names."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, obj: Any) -> Basepoints:
        """Parse a basepoints map; raise BasepointsWireError naming the bad field."""
        names = [f.name for f in fields(cls)]
        if not isinstance(obj, dict) or set(obj) != set(names):
            raise BasepointsWireError(f"basepoints must be a map with exactly {names}")
        for name in names:
            value = obj[name]
            if not isinstance(value, bytes) or len(value) != PUBKEY_LEN or value[0] not in (2, 3):
                raise BasepointsWireError(f"{name}: expected a 33-byte compressed public key")
        return cls(**{name: obj[name] for name in names})


@dataclass(frozen=True)
class BaseSecrets:
    """One side's basepoint secrets and shachain seed (never leaves the peer)."""

    funding_privkey: bytes
    revocation_basepoint_secret: bytes
    payment_basepoint_secret: bytes
    delayed_payment_basepoint_secret: bytes
    htlc_basepoint_secret: bytes
    shachain_seed: bytes

    def __repr__(self) -> str:
        return f"BaseSecrets(funding_pubkey={self.basepoints().funding_pubkey.hex()}, ...)"

    @classmethod
    def derive(cls, master: bytes, channel_index: int) -> BaseSecrets:
        """Deterministic secrets for channel ``channel_index`` of a node secret ``master``."""
        if not isinstance(master, bytes) or len(master) < 16:
            raise ChannelKeyError("master secret must be at least 16 bytes")
        if isinstance(channel_index, bool) or not isinstance(channel_index, int) \
                or channel_index < 0:
            raise ChannelKeyError(f"channel_index must be an integer ≥ 0, got {channel_index!r}")
        # One HMAC-SHA256 label per secret, so that no two secrets share key material.
        values = {
            f.name: identity.child_secret(master, f"lnemu/channel/{f.name}", channel_index)
            for f in fields(cls)
        }
        return cls(**values)

    def basepoints(self) -> Basepoints:
        """The public basepoints of these secrets."""
        return Basepoints(
            funding_pubkey=pubkey_from_privkey(self.funding_privkey),
            revocation_basepoint=pubkey_from_privkey(self.revocation_basepoint_secret),
            payment_basepoint=pubkey_from_privkey(self.payment_basepoint_secret),
            delayed_payment_basepoint=pubkey_from_privkey(self.delayed_payment_basepoint_secret),
            htlc_basepoint=pubkey_from_privkey(self.htlc_basepoint_secret),
        )

    def per_commitment_secret(self, commitment_number: int) -> bytes:
        """The shachain secret of our commitment ``commitment_number`` (revealed to revoke it)."""
        return generate_from_seed(self.shachain_seed, index_for_commitment(commitment_number))

    def per_commitment_point(self, commitment_number: int) -> bytes:
        """The point of our commitment ``commitment_number`` (sent ahead to the counterparty)."""
        return point_of_secret(self.per_commitment_secret(commitment_number))

    def delayed_privkey(self, per_commitment_point: bytes) -> bytes:
        """Our ``local_delayedpubkey`` secret on our commitment with that point."""
        return derive_privkey(self.delayed_payment_basepoint_secret, per_commitment_point)

    def htlc_privkey(self, per_commitment_point: bytes) -> bytes:
        """Our HTLC key secret on the commitment (ours or theirs) with that point."""
        return derive_privkey(self.htlc_basepoint_secret, per_commitment_point)

    def revocation_privkey(self, per_commitment_secret: bytes) -> bytes:
        """The revocation key of the counterparty's commitment whose secret it revealed."""
        return derive_revocation_privkey(self.revocation_basepoint_secret, per_commitment_secret)

    def payment_privkey(self) -> bytes:
        """The key of our ``to_remote`` output on the counterparty's commitments (untweaked)."""
        return self.payment_basepoint_secret


@dataclass(frozen=True)
class CommitmentKeys:
    """The keys of one commitment transaction, from the holder's point of view."""

    per_commitment_point: bytes
    revocation_pubkey: bytes  # the counterparty can punish with it once the state is revoked
    local_delayed_pubkey: bytes  # holder's to_local and second-stage outputs
    local_htlc_pubkey: bytes  # holder's HTLC key
    remote_htlc_pubkey: bytes  # counterparty's HTLC key
    to_remote_pubkey: bytes  # counterparty's payment basepoint, untweaked


def commitment_keys(
    per_commitment_point: bytes, holder: Basepoints, counterparty: Basepoints, *,
    per_commitment_secret: bytes | None = None, revocation_basepoint_secret: bytes | None = None,
) -> CommitmentKeys:
    """BOLT 3 keys of the holder's commitment with the holder's ``per_commitment_point``.
    The holder may pass the point's secret, the counterparty its revocation basepoint
    secret: the keys are the same, derived faster."""
    point = per_commitment_point
    return CommitmentKeys(
        per_commitment_point=point,
        revocation_pubkey=derive_revocation_pubkey(
            counterparty.revocation_basepoint, point, commitment_secret=per_commitment_secret,
            basepoint_secret=revocation_basepoint_secret),
        local_delayed_pubkey=derive_pubkey(holder.delayed_payment_basepoint, point),
        local_htlc_pubkey=derive_pubkey(holder.htlc_basepoint, point),
        remote_htlc_pubkey=derive_pubkey(counterparty.htlc_basepoint, point),
        to_remote_pubkey=counterparty.payment_basepoint,
    )
