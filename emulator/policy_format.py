"""Policy format: the limits, the checks of a policy tree, and the builders.

A policy (see ``emulator.policy``) is a tree of plain lists; :func:`check_policy` refuses
a malformed one, naming what is wrong, and the builders (``pk``, ``and_``, ...) make only
well-formed ones. A tree made by the builders is checked once, as it is built: each node
carries its node count and depth, so nesting it costs nothing more.
"""
from __future__ import annotations

from typing import Any

import msgpack

from emulator.crypto.ecdsa import parse_pubkey
from emulator.errors import DecodeError

MAX_POLICY_DEPTH = 16
MAX_POLICY_NODES = 128  # every node counts, and so does every key of a multi
MAX_MULTI_KEYS = 20  # as Bitcoin's CHECKMULTISIG
MAX_THRESH_SUBS = 20
MAX_OLDER_BLOCKS = 0xFFFF  # BIP 68: the low 16 bits of nSequence
LOCKTIME_THRESHOLD = 500_000_000  # below: a block height; at or above: a UNIX time
MAX_WITNESS_ITEMS = MAX_POLICY_NODES  # per list/map of a witness
PUBKEY_LEN = 33
HASH_LEN = 32
PREIMAGE_LEN = 32
SIGNATURE_LEN = 64

_ARITY = {
    "pk": 2, "multi": 3, "sha256": 2, "older": 2, "after": 2,
    "and": 3, "or": 3, "thresh": 3, "rev": 2,
}


class PolicyFormatError(DecodeError):
    """A policy tree or a witness that is not well formed."""

    code = "bad_policy"


# --- format ---------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Budget:
    """Counts nodes while a policy is checked, so a huge tree is refused early."""

    def __init__(self) -> None:
        self.nodes = 0
        self.depth = 0  # the deepest level reached

    def take(self, count: int, where: str) -> None:
        self.nodes += count
        if self.nodes > MAX_POLICY_NODES:
            raise PolicyFormatError(f"{where}: policy has more than {MAX_POLICY_NODES} nodes")


def _check_int(value: Any, where: str, what: str, low: int, high: int) -> None:
    if not is_int(value):
        raise PolicyFormatError(f"{where}: {what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise PolicyFormatError(f"{where}: {what} {value} out of range [{low}, {high}]")


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, bytes):
        raise PolicyFormatError(f"{where}: key must be bytes, got {type(key).__name__}")
    if len(key) != PUBKEY_LEN:
        raise PolicyFormatError(f"{where}: key must be {PUBKEY_LEN} bytes, got {len(key)}")
    if parse_pubkey(key) is None:
        raise PolicyFormatError(f"{where}: key {key.hex()} is not a valid secp256k1 point")


def _check_list(value: Any, where: str, what: str, max_len: int) -> None:
    if not isinstance(value, list):
        raise PolicyFormatError(f"{where}: {what} must be a list, got {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise PolicyFormatError(f"{where}: {what} must have 1 to {max_len} items, got {len(value)}")


def _check_multi(node: list, where: str, depth: int, budget: _Budget) -> None:
    _check_list(node[2], f"{where}[2]", "multi keys", MAX_MULTI_KEYS)
    keys = node[2]
    _check_int(node[1], f"{where}[1]", "multi k", 1, len(keys))
    budget.take(len(keys), where)
    for i, key in enumerate(keys):
        _check_key(key, f"{where}[2][{i}]")
    if len(set(keys)) != len(keys):
        raise PolicyFormatError(f"{where}[2]: multi keys must be distinct")


def _check_thresh(node: list, where: str, depth: int, budget: _Budget) -> None:
    _check_list(node[2], f"{where}[2]", "thresh subs", MAX_THRESH_SUBS)
    _check_int(node[1], f"{where}[1]", "thresh k", 1, len(node[2]))
    for i, sub in enumerate(node[2]):
        _check_node(sub, f"{where}[2][{i}]", depth + 1, budget)


def _check_sha256(node: list, where: str, depth: int, budget: _Budget) -> None:
    digest = node[1]
    if not isinstance(digest, bytes) or len(digest) != HASH_LEN:
        got = f"{len(digest)} bytes" if isinstance(digest, bytes) else type(digest).__name__
        raise PolicyFormatError(f"{where}[1]: sha256 hash must be {HASH_LEN} bytes, got {got}")


def _check_children(node: list, where: str, depth: int, budget: _Budget) -> None:
    for i in range(1, len(node)):
        _check_node(node[i], f"{where}[{i}]", depth + 1, budget)


_CHECKERS = {
    "pk": lambda node, where, depth, budget: _check_key(node[1], f"{where}[1]"),
    "multi": _check_multi,
    "sha256": _check_sha256,
    "older": lambda node, where, depth, budget: _check_int(
        node[1], f"{where}[1]", "older blocks", 1, MAX_OLDER_BLOCKS
    ),
    "after": lambda node, where, depth, budget: _check_int(
        node[1], f"{where}[1]", "after height", 1, LOCKTIME_THRESHOLD - 1
    ),
    "and": _check_children,
    "or": _check_children,
    "thresh": _check_thresh,
    "rev": _check_children,
}


class _Checked(list):
    """A policy node made by a builder below, so already checked: a tree built of such
    nodes is checked once, not again at every level (counts are kept for the limits).
    Like every policy it is never changed once built, so its msgpack form is kept too."""

    __slots__ = ("nodes", "depth", "packed")


def _check_node(node: Any, where: str, depth: int, budget: _Budget) -> None:
    if type(node) is _Checked:
        budget.take(node.nodes, where)
        budget.depth = max(budget.depth, depth - 1 + node.depth)
        if budget.depth > MAX_POLICY_DEPTH:
            raise PolicyFormatError(f"{where}: policy deeper than {MAX_POLICY_DEPTH} levels")
        return
    budget.depth = max(budget.depth, depth)
    if depth > MAX_POLICY_DEPTH:
        raise PolicyFormatError(f"{where}: policy deeper than {MAX_POLICY_DEPTH} levels")
    if not isinstance(node, list) or not node:
        raise PolicyFormatError(f"{where}: a policy node must be a non-empty list")
    name = node[0]
    if not isinstance(name, str) or name not in _ARITY:
        raise PolicyFormatError(f"{where}: unknown policy node {name!r}")
    if len(node) != _ARITY[name]:
        raise PolicyFormatError(
            f"{where}: {name} takes {_ARITY[name] - 1} argument(s), got {len(node) - 1}"
        )
    budget.take(1, where)
    _CHECKERS[name](node, where, depth, budget)


def packed_policy(cond: list) -> bytes:
    """The canonical msgpack bytes of ``cond``; of a tree made by the builders, computed
    once (a commitment's HTLC policy is hashed into its txid, sorted by, and hashed
    again into the sighash of its HTLC transaction)."""
    if type(cond) is not _Checked:
        return msgpack.packb(cond, use_bin_type=True)
    try:
        return cond.packed
    except AttributeError:
        cond.packed = msgpack.packb(cond, use_bin_type=True)
        return cond.packed


def check_policy(cond: Any) -> None:
    """Raise PolicyFormatError naming the first thing wrong with ``cond``, if anything."""
    _check_node(cond, "cond", 1, _Budget())


# --- builders -------------------------------------------------------------------------


def _checked(node: list) -> list:
    budget = _Budget()
    _check_node(node, "cond", 1, budget)
    checked = _Checked(node)
    checked.nodes, checked.depth = budget.nodes, budget.depth
    return checked


def _leaf(node: list) -> list:
    """A checked node without children (pk, sha256, older, after)."""
    _CHECKERS[node[0]](node, "cond", 1, None)
    checked = _Checked(node)
    checked.nodes, checked.depth = 1, 1
    return checked


def _branch(node: list, children: tuple[list, ...]) -> list:
    """A checked node over children made by the builders: their counts add up."""
    nodes, depth = 1, 0
    for child in children:  # a loop, not sum()/max() over generators: commitments
        if type(child) is not _Checked:  # build a dozen of these per HTLC output
            return _checked(node)
        nodes += child.nodes
        depth = max(depth, child.depth)
    checked = _Checked(node)
    checked.nodes, checked.depth = nodes, depth + 1
    if checked.nodes > MAX_POLICY_NODES:
        raise PolicyFormatError(f"cond: policy has more than {MAX_POLICY_NODES} nodes")
    if checked.depth > MAX_POLICY_DEPTH:
        raise PolicyFormatError(f"cond: policy deeper than {MAX_POLICY_DEPTH} levels")
    return checked


def pk(key: bytes) -> list:
    """A signature by ``key`` (33-byte compressed public key)."""
    return _leaf(["pk", key])


def multi(k: int, keys: list[bytes]) -> list:
    """Signatures by ``k`` of the distinct ``keys``."""
    return _checked(["multi", k, list(keys)])


def sha256(hash32: bytes) -> list:
    """A 32-byte preimage whose SHA-256 is ``hash32``."""
    return _leaf(["sha256", hash32])


def older(n: int) -> list:
    """A relative timelock: the spent output is ``n`` blocks deep (BIP 68/112)."""
    return _leaf(["older", n])


def after(h: int) -> list:
    """An absolute timelock: the spending tx's locktime is at least height ``h`` (BIP 65)."""
    return _leaf(["after", h])


def and_(a: list, b: list) -> list:
    """Both ``a`` and ``b``."""
    return _branch(["and", a, b], (a, b))


def or_(a: list, b: list) -> list:
    """Either ``a`` (witness path choice 0) or ``b`` (choice 1)."""
    return _branch(["or", a, b], (a, b))


def thresh(k: int, subs: list[list]) -> list:
    """At least ``k`` of ``subs``; the witness path lists the satisfied indexes."""
    return _checked(["thresh", k, list(subs)])


def revocation(sub: list) -> list:
    """Tag ``sub`` as a revocation branch (its spend is a penalty)."""
    return _branch(["rev", sub], (sub,))
