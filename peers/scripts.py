"""BOLT 3's output scripts as lnemu spending policies, and the witnesses that spend them.

Every policy is built with ``emulator.policy``'s builders, so the chain checks exactly
what BOLT 3's scripts would: the funding 2-of-2, ``to_local`` (revocation or delayed),
``to_remote`` (static remote key), offered and received HTLC outputs (revocation,
preimage and timeout branches) and the second-stage HTLC outputs (shaped as ``to_local``).

A witness names its branch by a path of ``or`` choices; the ``*_PATH`` constants below
are those paths, one per way of spending, so that callers never count branches by hand.
"""
from __future__ import annotations

from functools import lru_cache

from emulator.errors import LnemuError
from emulator.policy import (
    Witness,
    after,
    and_,
    multi,
    older,
    or_,
    pk,
    revocation,
    revocation_branch_path,
    sha256,
)
from peers.channel_keys import CommitmentKeys

# to_local and second-stage HTLC outputs: or(rev: pk(revocation), and(pk(delayed), older)).
TO_LOCAL_REVOCATION_PATH = (0,)
TO_LOCAL_DELAYED_PATH = (1,)
# HTLC outputs: or(rev: pk(revocation), or(<remote's branch>, <HTLC tx's branch>)).
HTLC_REVOCATION_PATH = (0,)
OFFERED_PREIMAGE_PATH = (1, 0)  # the counterparty claims with the preimage
OFFERED_TIMEOUT_PATH = (1, 1)  # the holder's HTLC-timeout tx (2-of-2, locktime = expiry)
RECEIVED_TIMEOUT_PATH = (1, 0)  # the counterparty reclaims after cltv_expiry
RECEIVED_SUCCESS_PATH = (1, 1)  # the holder's HTLC-success tx (2-of-2 + preimage)


class ScriptError(LnemuError):
    """A policy asked of something that has no such branch (e.g. no revocation branch)."""

    code = "script_error"


# --- policies -------------------------------------------------------------------------


def funding_policy(pubkey_a: bytes, pubkey_b: bytes) -> list:
    """The funding output: 2-of-2 of the funding pubkeys, lesser key first (BOLT 3)."""
    return multi(2, sorted([pubkey_a, pubkey_b]))


@lru_cache(maxsize=256)  # the same for to_local and every second-stage output of a commitment
def to_local_policy(
    revocation_pubkey: bytes, local_delayed_pubkey: bytes, to_self_delay: int
) -> list:
    """``to_local`` (and every second-stage HTLC output): punishable at once, else delayed."""
    return or_(
        revocation(pk(revocation_pubkey)),
        and_(pk(local_delayed_pubkey), older(to_self_delay)),
    )


def to_remote_policy(to_remote_pubkey: bytes) -> list:
    """``to_remote``: the counterparty's untweaked payment basepoint (static remote key)."""
    return pk(to_remote_pubkey)


@lru_cache(maxsize=256)
def _htlc_parts(keys: CommitmentKeys) -> tuple[list, list, list]:
    """What every HTLC policy of one commitment shares: its revocation branch, the
    counterparty's HTLC key and the 2-of-2 of both HTLC keys (policies are never
    changed once built, so one tree may be part of many)."""
    return (revocation(pk(keys.revocation_pubkey)), pk(keys.remote_htlc_pubkey),
            multi(2, [keys.local_htlc_pubkey, keys.remote_htlc_pubkey]))


def offered_htlc_policy(keys: CommitmentKeys, payment_hash: bytes) -> list:
    """An HTLC the holder offered: revocation | remote with preimage | HTLC-timeout 2-of-2."""
    # BOLT 3: the timeout branch has no CLTV of its own; the presigned HTLC-timeout
    # transaction carries locktime = cltv_expiry, which the chain enforces.
    rev, remote, both = _htlc_parts(keys)
    return or_(rev, or_(and_(remote, sha256(payment_hash)), both))


def received_htlc_policy(keys: CommitmentKeys, payment_hash: bytes, cltv_expiry: int) -> list:
    """An HTLC the holder received: revocation | remote after expiry | HTLC-success 2-of-2."""
    rev, remote, both = _htlc_parts(keys)
    return or_(rev, or_(and_(remote, after(cltv_expiry)), and_(both, sha256(payment_hash))))


def revocation_pubkey_of(cond: list) -> bytes | None:
    """The key of ``cond``'s top-level revocation branch, as BOLT 3 outputs have it, or None."""
    if len(cond) == 3 and cond[0] == "or":
        branch = cond[1]
        if branch[0] == "rev" and branch[1][0] == "pk":
            return branch[1][1]
    return None


# --- witnesses ------------------------------------------------------------------------


def funding_witness(pub_a: bytes, sig_a: bytes, pub_b: bytes, sig_b: bytes) -> Witness:
    """Both funding signatures (commitment or closing tx)."""
    return Witness((), {pub_a: sig_a, pub_b: sig_b})


def to_remote_witness(to_remote_pubkey: bytes, sig: bytes) -> Witness:
    """Spend a ``to_remote`` output."""
    return Witness((), {to_remote_pubkey: sig})


def delayed_witness(local_delayed_pubkey: bytes, sig: bytes) -> Witness:
    """Spend ``to_local`` or a second-stage output by the delayed key (sequence ≥ delay)."""
    return Witness(TO_LOCAL_DELAYED_PATH, {local_delayed_pubkey: sig})


def revocation_witness(cond: list, revocation_pubkey: bytes, sig: bytes) -> Witness:
    """Spend any BOLT 3 output through its revocation branch (justice)."""
    path = revocation_branch_path(cond)
    if path is None:
        raise ScriptError("policy has no revocation branch")
    return Witness(path, {revocation_pubkey: sig})


def offered_preimage_witness(
    remote_htlc_pubkey: bytes, sig: bytes, payment_hash: bytes, preimage: bytes
) -> Witness:
    """The counterparty claims an offered HTLC output with the preimage."""
    return Witness(OFFERED_PREIMAGE_PATH, {remote_htlc_pubkey: sig}, {payment_hash: preimage})


def received_timeout_witness(remote_htlc_pubkey: bytes, sig: bytes) -> Witness:
    """The counterparty reclaims a received HTLC output (tx locktime ≥ cltv_expiry)."""
    return Witness(RECEIVED_TIMEOUT_PATH, {remote_htlc_pubkey: sig})


def htlc_timeout_witness(keys: CommitmentKeys, local_sig: bytes, remote_sig: bytes) -> Witness:
    """The HTLC-timeout tx's input: both HTLC signatures."""
    sigs = {keys.local_htlc_pubkey: local_sig, keys.remote_htlc_pubkey: remote_sig}
    return Witness(OFFERED_TIMEOUT_PATH, sigs)


def htlc_success_witness(
    keys: CommitmentKeys, local_sig: bytes, remote_sig: bytes, payment_hash: bytes, preimage: bytes
) -> Witness:
    """The HTLC-success tx's input: both HTLC signatures and the preimage."""
    sigs = {keys.local_htlc_pubkey: local_sig, keys.remote_htlc_pubkey: remote_sig}
    return Witness(RECEIVED_SUCCESS_PATH, sigs, {payment_hash: preimage})
