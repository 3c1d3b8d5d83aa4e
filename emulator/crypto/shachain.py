"""BOLT 3 per-commitment secrets: generation from a seed and compact receiver storage.

BOLT 3 (Appendix D, "Efficient Per-commitment Secret Storage"): secrets are
indexed by a 48-bit number that counts *down* from 2**48 - 1, one per commitment
(commitment number 0 uses index 2**48 - 1). The secret for index ``I`` is the
seed with, for each bit ``B`` of ``I`` set from bit 47 down to bit 0, bit ``B``
flipped and the result hashed with SHA256. A secret whose index ends in ``B``
zero bits can therefore regenerate every index sharing its bits above ``B``,
so a receiver keeps one secret per trailing-zero count: at most 49.
"""
from __future__ import annotations

import hashlib
from typing import Any

from emulator.errors import DecodeError, LnemuError

INDEX_BITS = 48
MAX_INDEX = (1 << INDEX_BITS) - 1
MAX_ENTRIES = INDEX_BITS + 1
SECRET_LEN = 32


class ShachainError(LnemuError):
    """A per-commitment secret, index or store that breaks the BOLT 3 shachain rules."""

    code = "shachain_error"


class InconsistentSecretError(ShachainError):
    """A received secret that does not derive the earlier secrets it must derive."""

    code = "inconsistent_secret"


class SecretOutOfOrderError(ShachainError):
    """A secret inserted at an index other than the next one expected (one below the last)."""

    code = "secret_out_of_order"


class UnknownSecretError(ShachainError):
    """A secret asked for that was never received."""

    code = "unknown_secret"


class ShachainWireError(ShachainError, DecodeError):
    """A persisted revocation store that is malformed or self-inconsistent."""

    code = "bad_shachain_wire"


def index_for_commitment(commitment_number: int) -> int:
    """Return the shachain index of a commitment number (BOLT 3: index 2**48 - 1 is first)."""
    _check_index(commitment_number, "commitment_number")
    return MAX_INDEX - commitment_number


def generate_from_seed(seed: bytes, index: int) -> bytes:
    """Return the per-commitment secret for a 48-bit ``index`` from a 32-byte ``seed``."""
    _check_secret(seed, "seed")
    _check_index(index, "index")
    return _derive(bytes(seed), INDEX_BITS, index)


def _derive(base: bytes, bits: int, index: int) -> bytes:
    """Flip-and-hash ``base`` for each set bit of ``index`` below ``bits``, highest first."""
    value = base
    for bit in range(bits - 1, -1, -1):
        if index >> bit & 1:
            flipped = bytearray(value)
            flipped[bit // 8] ^= 1 << (bit % 8)
            value = hashlib.sha256(flipped).digest()
    return value


def _position(index: int) -> int:
    """Slot of ``index`` in the store: its count of trailing zero bits (48 for index 0)."""
    if index == 0:
        return INDEX_BITS
    return (index & -index).bit_length() - 1


class RevocationStore:
    """Compact storage of a peer's revealed per-commitment secrets (at most 49 entries)."""

    def __init__(self) -> None:
        # _entries[b] is (index, secret) for the latest received index with b trailing zeros.
        self._entries: list[tuple[int, bytes] | None] = [None] * MAX_ENTRIES
        self._next_index = MAX_INDEX

    @property
    def next_index(self) -> int:
        """The index the next inserted secret must carry (-1 once index 0 was received)."""
        return self._next_index

    @property
    def entry_count(self) -> int:
        """How many secrets are stored (not how many were received)."""
        return sum(entry is not None for entry in self._entries)

    def insert(self, index: int, secret: bytes) -> None:
        """Store the secret for ``index``; raise if out of order or contradicting earlier ones."""
        _check_index(index, "index")
        _check_secret(secret, "secret")
        if index != self._next_index:
            raise SecretOutOfOrderError(
                f"secret for index {index} received, expected index {self._next_index}"
            )
        position = _position(index)
        # Appendix D: "for b in 0 to B" covers b < B, the slots this secret can derive.
        for lower in range(position):
            entry = self._entries[lower]
            if entry is not None and _derive(bytes(secret), position, entry[0]) != entry[1]:
                raise InconsistentSecretError(
                    f"secret for index {index} does not derive the stored secret "
                    f"for index {entry[0]}"
                )
        self._entries[position] = (index, bytes(secret))
        self._next_index = index - 1

    def get(self, index: int) -> bytes:
        """Return the previously received secret for ``index``."""
        _check_index(index, "index")
        if index <= self._next_index:
            raise UnknownSecretError(
                f"no secret received for index {index} (received down to {self._next_index + 1})"
            )
        for position, entry in enumerate(self._entries):
            if entry is not None and entry[0] >> position == index >> position:
                return _derive(entry[1], position, index)
        raise ShachainError(f"store holds nothing that derives index {index}")

    def to_wire(self) -> dict[str, Any]:
        """Return a msgpack-friendly dict: ``next_index`` and ``entries`` as [index, secret]."""
        entries = [[entry[0], entry[1]] for entry in self._entries if entry is not None]
        return {"next_index": self._next_index, "entries": entries}

    @classmethod
    def from_wire(cls, data: Any) -> RevocationStore:
        """Rebuild a store from :meth:`to_wire` output, checking its shape and its secrets."""
        if not isinstance(data, dict) or set(data) != {"next_index", "entries"}:
            raise ShachainWireError("revocation store must be a dict with next_index and entries")
        next_index = data["next_index"]
        if not isinstance(next_index, int) or not -1 <= next_index <= MAX_INDEX:
            raise ShachainWireError(f"bad next_index {next_index!r}")
        store = cls()
        store._next_index = next_index
        for item in _wire_entries(data["entries"]):
            index, secret = item
            if index <= next_index:
                raise ShachainWireError(f"entry index {index} not received yet (next {next_index})")
            if store._entries[_position(index)] is not None:
                raise ShachainWireError(f"two entries share the slot of index {index}")
            store._entries[_position(index)] = (index, secret)
        if [e[0] if e else None for e in store._entries] != _expected_indices(next_index):
            raise ShachainWireError("entries do not match the indices received so far")
        store._check_consistent()
        return store

    def _check_consistent(self) -> None:
        """Check every stored secret against the lower-slot secrets it can derive."""
        for position, entry in enumerate(self._entries):
            if entry is None:
                continue
            for lower in range(position):
                other = self._entries[lower]
                if other is None or other[0] >> position != entry[0] >> position:
                    continue
                if _derive(entry[1], position, other[0]) != other[1]:
                    raise ShachainWireError(
                        f"stored secret for index {entry[0]} contradicts index {other[0]}"
                    )


def _wire_entries(entries: Any) -> list[tuple[int, bytes]]:
    """Validate the ``entries`` list of a wire store."""
    if not isinstance(entries, list | tuple) or len(entries) > MAX_ENTRIES:
        raise ShachainWireError("entries must be a list of at most 49 [index, secret] pairs")
    parsed: list[tuple[int, bytes]] = []
    for item in entries:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ShachainWireError(f"entry must be [index, secret], got {item!r}")
        index, secret = item
        if not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
            raise ShachainWireError(f"entry index out of range: {index!r}")
        if not isinstance(secret, bytes) or len(secret) != SECRET_LEN:
            raise ShachainWireError(f"entry secret for index {index} must be 32 bytes")
        parsed.append((index, secret))
    return parsed


def _expected_indices(next_index: int) -> list[int | None]:
    """Per slot, the index a store that received MAX_INDEX down to next_index + 1 holds."""
    expected: list[int | None] = [None] * MAX_ENTRIES
    start = next_index + 1
    for position in range(INDEX_BITS):
        step = 1 << position
        multiple = -(-start // step)
        if multiple % 2 == 0:
            multiple += 1  # an even multiple has more than `position` trailing zeros
        if multiple * step <= MAX_INDEX:
            expected[position] = multiple * step
    if next_index < 0:
        expected[INDEX_BITS] = 0
    return expected


def _check_index(index: int, what: str) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise ShachainError(f"{what} must be an integer in [0, 2**48), got {index!r}")


def _check_secret(secret: bytes, what: str) -> None:
    if not isinstance(secret, bytes | bytearray) or len(secret) != SECRET_LEN:
        raise ShachainError(f"{what} must be {SECRET_LEN} bytes")
