"""BOLT 3 per-commitment secrets (Appendix D): generation and compact storage."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.crypto.shachain import (
    MAX_ENTRIES,
    MAX_INDEX,
    InconsistentSecretError,
    RevocationStore,
    SecretOutOfOrderError,
    ShachainError,
    ShachainWireError,
    UnknownSecretError,
    generate_from_seed,
    index_for_commitment,
)
from emulator.errors import DecodeError
from tests.conftest import load_vector

_VECTORS = load_vector("bolt03-appendixD-shachain.json")
_GENERATION = _VECTORS["generation"]
_STORAGE = _VECTORS["storage"]


@pytest.mark.parametrize("case", _GENERATION, ids=[case["name"] for case in _GENERATION])
def test_generate_from_seed(case: dict) -> None:
    secret = generate_from_seed(bytes.fromhex(case["seed"]), case["I"])
    assert secret.hex() == case["output"]


@pytest.mark.parametrize("case", _STORAGE, ids=[case["name"] for case in _STORAGE])
def test_storage(case: dict) -> None:
    store = RevocationStore()
    accepted: dict[int, bytes] = {}
    for step in case["inserts"]:
        secret = bytes.fromhex(step["secret"])
        if step["output"] == "OK":
            store.insert(step["I"], secret)
            accepted[step["I"]] = secret
        else:
            assert step["output"] == "ERROR"
            before = store.to_wire()
            with pytest.raises(InconsistentSecretError):
                store.insert(step["I"], secret)
            assert store.to_wire() == before  # a rejected secret leaves the store untouched
    for index, secret in accepted.items():
        assert store.get(index) == secret


def test_index_for_commitment() -> None:
    assert index_for_commitment(0) == MAX_INDEX
    assert index_for_commitment(5) == MAX_INDEX - 5
    with pytest.raises(ShachainError):
        index_for_commitment(MAX_INDEX + 1)


@pytest.mark.parametrize(
    ("seed", "index"),
    [(bytes(31), 0), (bytes(32), -1), (bytes(32), MAX_INDEX + 1)],
    ids=["short seed", "negative index", "index past 48 bits"],
)
def test_generate_rejects_bad_input(seed: bytes, index: int) -> None:
    with pytest.raises(ShachainError):
        generate_from_seed(seed, index)


def _filled_store(seed: bytes, count: int) -> RevocationStore:
    store = RevocationStore()
    for commitment_number in range(count):
        index = index_for_commitment(commitment_number)
        store.insert(index, generate_from_seed(seed, index))
    return store


def test_out_of_order_insert() -> None:
    seed = bytes(32)
    store = _filled_store(seed, 3)
    with pytest.raises(SecretOutOfOrderError):
        store.insert(MAX_INDEX - 4, generate_from_seed(seed, MAX_INDEX - 4))
    with pytest.raises(SecretOutOfOrderError):
        store.insert(MAX_INDEX - 1, generate_from_seed(seed, MAX_INDEX - 1))
    assert store.next_index == MAX_INDEX - 3


def test_get_unknown_secret() -> None:
    store = _filled_store(bytes(32), 4)
    with pytest.raises(UnknownSecretError):
        store.get(MAX_INDEX - 4)
    with pytest.raises(UnknownSecretError):
        RevocationStore().get(MAX_INDEX)


def test_store_reaches_index_zero() -> None:
    """The last index (0, all 48 bits clear) uses slot 48 and derives every index."""
    seed = b"\x5a" * 32
    store = RevocationStore()
    store._next_index = 0  # noqa: SLF001 - jump to the end instead of 2**48 inserts
    store._entries[47] = (1 << 47, generate_from_seed(seed, 1 << 47))  # noqa: SLF001
    store.insert(0, generate_from_seed(seed, 0))
    assert store.next_index == -1
    assert store.get(12345) == generate_from_seed(seed, 12345)
    assert store.get(MAX_INDEX) == generate_from_seed(seed, MAX_INDEX)


def test_wire_round_trip() -> None:
    seed = bytes(range(32))
    store = _filled_store(seed, 100)
    restored = RevocationStore.from_wire(store.to_wire())
    assert restored.to_wire() == store.to_wire()
    for commitment_number in range(100):
        index = index_for_commitment(commitment_number)
        assert restored.get(index) == generate_from_seed(seed, index)
    index = index_for_commitment(100)
    restored.insert(index, generate_from_seed(seed, index))


def test_wire_survives_msgpack() -> None:
    store = _filled_store(bytes(range(32)), 37)
    packed = msgpack.packb(store.to_wire())
    restored = RevocationStore.from_wire(msgpack.unpackb(packed))
    assert restored.to_wire() == store.to_wire()


def test_wire_empty_store() -> None:
    assert RevocationStore.from_wire(RevocationStore().to_wire()).next_index == MAX_INDEX


def _wire_with(**changes: object) -> dict:
    wire = _filled_store(bytes(range(32)), 10).to_wire()
    wire.update(changes)
    return wire


_BAD_WIRES = {
    "not a dict": lambda: [1, 2],
    "missing entries": lambda: {"next_index": MAX_INDEX},
    "bad next_index": lambda: _wire_with(next_index="x"),
    "next_index moved": lambda: _wire_with(next_index=MAX_INDEX - 20),
    "short secret": lambda: _wire_with(entries=[[MAX_INDEX, b"\x01"]]),
    "entry dropped": lambda: _wire_with(entries=_wire_with()["entries"][1:]),
    "entry duplicated": lambda: _wire_with(entries=_wire_with()["entries"] * 2),
    "secret tampered": lambda: _wire_with(
        entries=[[index, bytes(32) if i == 0 else secret]
                 for i, (index, secret) in enumerate(_wire_with()["entries"])]
    ),
}


@pytest.mark.parametrize("make_wire", list(_BAD_WIRES.values()), ids=list(_BAD_WIRES))
def test_wire_rejects(make_wire) -> None:
    with pytest.raises(ShachainWireError) as excinfo:
        RevocationStore.from_wire(make_wire())
    assert isinstance(excinfo.value, DecodeError)


@settings(max_examples=5, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), count=st.integers(min_value=1000, max_value=3000))
def test_sequential_inserts_stay_compact(seed: bytes, count: int) -> None:
    store = RevocationStore()
    for commitment_number in range(count):
        index = index_for_commitment(commitment_number)
        store.insert(index, generate_from_seed(seed, index))
        assert store.entry_count <= MAX_ENTRIES
    for commitment_number in range(count):
        index = index_for_commitment(commitment_number)
        assert store.get(index) == generate_from_seed(seed, index)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    count=st.integers(min_value=1, max_value=200),
    wrong_secret=st.binary(min_size=32, max_size=32),
)
def test_wrong_secret_rejected(seed: bytes, count: int, wrong_secret: bytes) -> None:
    store = _filled_store(seed, count)
    index = store.next_index
    # Find the next index that has earlier secrets to check against (odd ones check nothing).
    while index & 1:
        store.insert(index, generate_from_seed(seed, index))
        index = store.next_index
    if wrong_secret == generate_from_seed(seed, index):
        return
    with pytest.raises(InconsistentSecretError):
        store.insert(index, wrong_secret)
