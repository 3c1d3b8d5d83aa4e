"""Spending policies: a Miniscript subset as plain msgpack-able lists, and their evaluator.

A policy (``cond``) is a tree of lists: ``["pk", key33]``, ``["multi", k, [key33, ...]]``,
``["sha256", hash32]``, ``["older", n]``, ``["after", h]``, ``["and", a, b]``,
``["or", a, b]``, ``["thresh", k, [sub, ...]]`` and ``["rev", sub]`` (tags ``sub`` as a
revocation branch). A :class:`Witness` names the branch taken (its ``path``) and supplies
signatures and preimages; :func:`evaluate` checks it against a :class:`SpendContext`.

Signatures are ECDSA over secp256k1 in 64-byte compact form (``r || s``, big-endian,
low-S), made and checked by ``emulator.crypto.ecdsa`` (re-exported here and by
``emulator.tx``), so that the peers (which sign) and the chain (which validates) share one
primitive.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

from emulator.crypto.ecdsa import SigningError, parse_pubkey, sign, verify  # noqa: F401  (re-exported)
from emulator.errors import LnemuError
from emulator.policy_format import (  # noqa: F401  (re-exported: the policy API is here)
    HASH_LEN,
    LOCKTIME_THRESHOLD,
    MAX_MULTI_KEYS,
    MAX_OLDER_BLOCKS,
    MAX_POLICY_DEPTH,
    MAX_POLICY_NODES,
    MAX_THRESH_SUBS,
    MAX_WITNESS_ITEMS,
    PREIMAGE_LEN,
    PUBKEY_LEN,
    SIGNATURE_LEN,
    PolicyFormatError,
    after,
    and_,
    check_policy,
    is_int,
    multi,
    older,
    or_,
    packed_policy,
    pk,
    revocation,
    sha256,
    thresh,
)

# BIP 68 / BIP 112 bits of an input's sequence number.
SEQUENCE_FINAL = 0xFFFF_FFFF
SEQUENCE_DISABLE_FLAG = 1 << 31
SEQUENCE_TYPE_FLAG = 1 << 22  # set: the relative lock counts 512-second units, not blocks
SEQUENCE_LOCKTIME_MASK = 0xFFFF


class Reason(StrEnum):
    """Why a witness does not satisfy a policy (``PolicyNotSatisfied.reason``)."""

    BAD_SIGNATURE = "bad_signature"
    MISSING_SIGNATURE = "missing_signature"
    WRONG_PREIMAGE = "wrong_preimage"
    MISSING_PREIMAGE = "missing_preimage"
    RELATIVE_TIMELOCK = "relative_timelock"  # older(n): the spent output is too young
    ABSOLUTE_TIMELOCK = "absolute_timelock"  # after(h): the tx's locktime is below h
    BAD_PATH = "bad_path"
    UNUSED_WITNESS = "unused_witness"
    SEQUENCE_DISABLED = "sequence_disabled"  # older(n) with the BIP 68 disable bit set
    SEQUENCE_TIME_BASED = "sequence_time_based"  # older(n) with the BIP 68 type bit set
    SEQUENCE_TOO_LOW = "sequence_too_low"  # older(n) with (sequence & 0xFFFF) < n
    LOCKTIME_TIME_BASED = "locktime_time_based"  # after(h) but the locktime is a UNIX time
    SEQUENCE_FINAL = "sequence_final"  # after(h) on an input whose sequence is 0xFFFFFFFF


class PolicyNotSatisfied(LnemuError):
    """A witness that does not satisfy a policy: which branch, why, and how long to wait."""

    code = "policy_not_satisfied"

    def __init__(
        self, branch: str, reason: str, detail: str, blocks_needed: int | None = None
    ) -> None:
        super().__init__(f"branch {branch or '(root)'}: {detail}")
        self.branch = branch
        self.reason = reason
        self.blocks_needed = blocks_needed


# --- witness and context --------------------------------------------------------------


def _check_byte_map(items: Any, what: str, key_len: int, value_len: int) -> None:
    if not isinstance(items, dict):
        raise PolicyFormatError(f"witness {what} must be a map, got {type(items).__name__}")
    if len(items) > MAX_WITNESS_ITEMS:
        raise PolicyFormatError(f"witness has more than {MAX_WITNESS_ITEMS} {what}")
    for key, value in items.items():
        if not isinstance(key, bytes) or len(key) != key_len:
            raise PolicyFormatError(f"witness {what}: keys must be {key_len} bytes")
        if not isinstance(value, bytes) or len(value) != value_len:
            raise PolicyFormatError(f"witness {what}: values must be {value_len} bytes")


def _check_path(path: tuple) -> None:
    if len(path) > MAX_WITNESS_ITEMS:
        raise PolicyFormatError(f"witness path longer than {MAX_WITNESS_ITEMS}")
    for choice in path:
        if not is_int(choice) or not 0 <= choice < MAX_THRESH_SUBS:
            raise PolicyFormatError(f"witness path item {choice!r} is not an index < {MAX_THRESH_SUBS}")


@dataclass(frozen=True)
class Witness:
    """How an input satisfies its spent policy: branch choices, signatures and preimages."""

    path: tuple[int, ...] = ()
    sigs: dict[bytes, bytes] = field(default_factory=dict)  # pubkey33 -> 64-byte signature
    preimages: dict[bytes, bytes] = field(default_factory=dict)  # hash32 -> preimage32

    def __post_init__(self) -> None:
        if not isinstance(self.path, (list, tuple)):
            raise PolicyFormatError(f"witness path must be a list, got {type(self.path).__name__}")
        object.__setattr__(self, "path", tuple(self.path))
        _check_path(self.path)
        _check_byte_map(self.sigs, "sigs", PUBKEY_LEN, SIGNATURE_LEN)
        _check_byte_map(self.preimages, "preimages", HASH_LEN, PREIMAGE_LEN)
        # Copies, so that a caller's later changes to its maps cannot alter a frozen witness.
        object.__setattr__(self, "sigs", dict(self.sigs))
        object.__setattr__(self, "preimages", dict(self.preimages))

    def to_wire(self) -> dict:
        """The witness as a plain msgpack-able map (map entries in sorted order)."""
        return {
            "path": list(self.path),
            "sigs": dict(sorted(self.sigs.items())),
            "preimages": dict(sorted(self.preimages.items())),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Witness:
        """Parse a witness map; raise PolicyFormatError on anything malformed."""
        if not isinstance(obj, dict):
            raise PolicyFormatError(f"witness must be a map, got {type(obj).__name__}")
        if set(obj) != {"path", "sigs", "preimages"}:
            raise PolicyFormatError(f"witness must have keys path, sigs, preimages; got {sorted(map(str, obj))}")
        if not isinstance(obj["path"], list):
            raise PolicyFormatError("witness path must be a list")
        return cls(tuple(obj["path"]), obj["sigs"], obj["preimages"])


@dataclass(frozen=True)
class SpendContext:
    """What a spend is checked against: the digest signed and the timelock facts."""

    sighash: bytes
    locktime: int  # the spending tx's
    sequence: int  # this input's
    spend_height: int  # height of the block the spend would confirm in
    confirmed_height: int  # height of the block that confirmed the spent output


@dataclass(frozen=True)
class SpendResult:
    """A satisfied policy: whether a revocation branch was used, and which branch."""

    revocation: bool
    branch: str


# --- evaluation -----------------------------------------------------------------------


def _short(data: bytes) -> str:
    return data[:4].hex()


class _Spend:
    """One walk of a policy along a witness's path, recording what the witness used."""

    def __init__(self, witness: Witness, ctx: SpendContext) -> None:
        self.witness = witness
        self.ctx = ctx
        self.position = 0
        self.used_sigs: set[bytes] = set()
        self.used_preimages: set[bytes] = set()
        self.revocation = False

    def fail(self, branch: str, reason: Reason, detail: str, blocks: int | None = None) -> NoReturn:
        raise PolicyNotSatisfied(branch, reason, detail, blocks)

    def choose(self, branch: str, limit: int) -> int:
        """Take the next path item, which must be an index below ``limit``."""
        path = self.witness.path
        if self.position >= len(path):
            self.fail(branch, Reason.BAD_PATH, "witness path ends before this choice")
        choice = path[self.position]
        self.position += 1
        if not 0 <= choice < limit:
            self.fail(branch, Reason.BAD_PATH, f"witness path chooses {choice}, must be < {limit}")
        return choice

    def walk(self, node: list, prefix: str) -> str:
        """Check ``node``; return the rendering of the branch taken through it."""
        return _WALKERS[node[0]](self, node, prefix)

    def signature(self, key: bytes, branch: str) -> None:
        sig = self.witness.sigs.get(key)
        if sig is None:
            self.fail(branch, Reason.MISSING_SIGNATURE, f"missing signature for key {key.hex()}")
        if not verify(key, self.ctx.sighash, sig):
            self.fail(branch, Reason.BAD_SIGNATURE, f"bad signature for key {key.hex()}")
        self.used_sigs.add(key)

    def finish(self, branch: str) -> None:
        """Refuse leftover path items and unused signatures or preimages (canonical witness)."""
        if self.position != len(self.witness.path):
            extra = len(self.witness.path) - self.position
            self.fail(branch, Reason.BAD_PATH, f"witness path has {extra} unused item(s)")
        for key in self.witness.sigs:
            if key not in self.used_sigs:
                self.fail(branch, Reason.UNUSED_WITNESS, f"unused signature for key {key.hex()}")
        for digest in self.witness.preimages:
            if digest not in self.used_preimages:
                self.fail(branch, Reason.UNUSED_WITNESS, f"unused preimage for hash {digest.hex()}")


def _walk_pk(spend: _Spend, node: list, prefix: str) -> str:
    spend.signature(node[1], prefix + "pk")
    return "pk"


def _walk_multi(spend: _Spend, node: list, prefix: str) -> str:
    k, keys = node[1], node[2]
    label = f"multi({k})"
    # The first k listed keys that have a signature in the witness must all verify.
    signed = [key for key in keys if key in spend.witness.sigs][:k]
    if len(signed) < k:
        detail = f"{len(signed)} of {k} required signatures"
        spend.fail(prefix + label, Reason.MISSING_SIGNATURE, detail)
    for key in signed:
        spend.signature(key, prefix + label)
    return label


def _walk_sha256(spend: _Spend, node: list, prefix: str) -> str:
    digest = node[1]
    preimage = spend.witness.preimages.get(digest)
    if preimage is None:
        spend.fail(prefix + "sha256", Reason.MISSING_PREIMAGE, f"missing preimage of {digest.hex()}")
    if hashlib.sha256(preimage).digest() != digest:
        spend.fail(prefix + "sha256", Reason.WRONG_PREIMAGE, f"wrong preimage of {digest.hex()}")
    spend.used_preimages.add(digest)
    return "sha256"


def _walk_older(spend: _Spend, node: list, prefix: str) -> str:
    blocks, ctx = node[1], spend.ctx
    branch = prefix + f"older({blocks})"
    # BIP 112: CHECKSEQUENCEVERIFY reads the input's sequence as a BIP 68 relative lock.
    if ctx.sequence & SEQUENCE_DISABLE_FLAG:
        spend.fail(branch, Reason.SEQUENCE_DISABLED, "input sequence has the BIP 68 disable bit set")
    if ctx.sequence & SEQUENCE_TYPE_FLAG:
        spend.fail(branch, Reason.SEQUENCE_TIME_BASED, "input sequence is a time-based relative lock")
    if ctx.sequence & SEQUENCE_LOCKTIME_MASK < blocks:
        detail = f"input sequence locks {ctx.sequence & SEQUENCE_LOCKTIME_MASK} blocks, below {blocks}"
        spend.fail(branch, Reason.SEQUENCE_TOO_LOW, detail)
    # BIP 68: spendable in a block at least `blocks` above the one that confirmed the output.
    needed = ctx.confirmed_height + blocks - ctx.spend_height
    if needed > 0:
        detail = f"relative timelock, {needed} more blocks needed"
        spend.fail(branch, Reason.RELATIVE_TIMELOCK, detail, needed)
    return f"older({blocks})"


def _walk_after(spend: _Spend, node: list, prefix: str) -> str:
    height, ctx = node[1], spend.ctx
    branch = prefix + f"after({height})"
    # BIP 65: CHECKLOCKTIMEVERIFY compares with the tx's locktime, which must be enforced
    # (the input is not final) and of the same kind (a height, not a time).
    if ctx.sequence == SEQUENCE_FINAL:
        spend.fail(branch, Reason.SEQUENCE_FINAL, "input sequence is final, so locktime is ignored")
    if ctx.locktime >= LOCKTIME_THRESHOLD:
        spend.fail(branch, Reason.LOCKTIME_TIME_BASED, f"tx locktime {ctx.locktime} is a time")
    if ctx.locktime < height:
        detail = f"absolute timelock, tx locktime {ctx.locktime} is below {height}"
        spend.fail(branch, Reason.ABSOLUTE_TIMELOCK, detail)
    return f"after({height})"


def _walk_and(spend: _Spend, node: list, prefix: str) -> str:
    left = spend.walk(node[1], prefix)
    right = spend.walk(node[2], prefix)
    return f"and({left},{right})"


def _walk_or(spend: _Spend, node: list, prefix: str) -> str:
    choice = spend.choose(prefix + "or", 2)
    step = f"or[{choice}]/"
    return step + spend.walk(node[1 + choice], prefix + step)


def _walk_thresh(spend: _Spend, node: list, prefix: str) -> str:
    k, subs = node[1], node[2]
    chosen = [spend.choose(prefix + f"thresh({k})", len(subs)) for _ in range(k)]
    if any(a >= b for a, b in zip(chosen, chosen[1:], strict=False)):
        spend.fail(prefix + f"thresh({k})", Reason.BAD_PATH, f"thresh indexes {chosen} not increasing")
    parts = [spend.walk(subs[i], prefix + f"thresh[{i}]/") for i in chosen]
    return f"thresh[{','.join(map(str, chosen))}]({','.join(parts)})"


def _walk_rev(spend: _Spend, node: list, prefix: str) -> str:
    spend.revocation = True
    return "rev:" + spend.walk(node[1], prefix + "rev:")


_WALKERS = {
    "pk": _walk_pk, "multi": _walk_multi, "sha256": _walk_sha256, "older": _walk_older,
    "after": _walk_after, "and": _walk_and, "or": _walk_or, "thresh": _walk_thresh,
    "rev": _walk_rev,
}


def evaluate(cond: list, witness: Witness, ctx: SpendContext) -> SpendResult:
    """Check that ``witness`` satisfies ``cond`` in ``ctx``; raise PolicyNotSatisfied if not."""
    check_policy(cond)
    spend = _Spend(witness, ctx)
    branch = spend.walk(cond, "")
    spend.finish(branch)
    return SpendResult(revocation=spend.revocation, branch=branch)


# --- helpers for spenders -------------------------------------------------------------


def _has_rev(node: list) -> bool:
    name = node[0]
    if name == "rev":
        return True
    if name in ("and", "or"):
        return _has_rev(node[1]) or _has_rev(node[2])
    if name == "thresh":
        return any(_has_rev(sub) for sub in node[2])
    return False


def _steer(node: list, path: list[int]) -> None:
    """Append the path items that reach the first revocation branch (else the leftmost)."""
    name = node[0]
    if name == "or":
        choice = 1 if not _has_rev(node[1]) and _has_rev(node[2]) else 0
        path.append(choice)
        _steer(node[1 + choice], path)
    elif name == "and":
        _steer(node[1], path)
        _steer(node[2], path)
    elif name == "rev":
        _steer(node[1], path)
    elif name == "thresh":
        k, subs = node[1], node[2]
        with_rev = [i for i, sub in enumerate(subs) if _has_rev(sub)][:1]
        others = [i for i in range(len(subs)) if i not in with_rev]
        chosen = sorted(with_rev + others[: k - len(with_rev)])
        path.extend(chosen)
        for i in chosen:
            _steer(subs[i], path)


def revocation_branch_path(cond: list) -> tuple[int, ...] | None:
    """The witness path that takes the first revocation branch of ``cond``, or None if none.

    Choices that do not lead to that branch (including any inside it) take the leftmost
    option: 0 at an ``or``, the lowest indexes at a ``thresh``.
    """
    check_policy(cond)
    if not _has_rev(cond):
        return None
    path: list[int] = []
    _steer(cond, path)
    return tuple(path)


def _describe(node: list) -> str:
    name = node[0]
    if name == "pk":
        return f"pk({_short(node[1])})"
    if name == "multi":
        return f"multi({node[1]},{','.join(_short(key) for key in node[2])})"
    if name == "sha256":
        return f"sha256({_short(node[1])})"
    if name in ("older", "after"):
        return f"{name}({node[1]})"
    if name == "rev":
        return "rev:" + _describe(node[1])
    if name == "thresh":
        return f"thresh({node[1]},{','.join(_describe(sub) for sub in node[2])})"
    return f"{name}({_describe(node[1])},{_describe(node[2])})"


def describe(cond: list) -> str:
    """A compact rendering, keys and hashes shortened to 4 bytes: ``or(rev:pk(02ab..),...)``."""
    check_policy(cond)
    return _describe(cond)
