"""Transactions: txid, wire form, parsing errors, sighash, signing and finality."""
from __future__ import annotations

import copy
import hashlib

import msgpack
import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.errors import DecodeError
from emulator.policy import (
    PolicyNotSatisfied,
    SpendResult,
    Witness,
    and_,
    multi,
    older,
    or_,
    pk,
    revocation,
)
from emulator.tx import (
    MAX_MONEY_SAT,
    MAX_TX_BYTES,
    MAX_TX_INPUTS,
    MAX_TX_OUTPUTS,
    SIGHASH_TAG,
    OutPoint,
    Tx,
    TxError,
    TxFormatError,
    TxIn,
    TxOut,
    blocks_until_final,
    is_final,
    sighash,
    sign,
    verify,
)

PRIV = [hashlib.sha256(b"lnemu tx test key %d" % i).digest() for i in range(4)]
PUB = [PrivateKey(key).public_key.format() for key in PRIV]
TXID_A = hashlib.sha256(b"a").digest()
TXID_B = hashlib.sha256(b"b").digest()
FUNDING = multi(2, [PUB[0], PUB[1]])
TO_LOCAL = or_(revocation(pk(PUB[2])), and_(pk(PUB[3]), older(144)))


def sample_tx() -> Tx:
    return Tx(
        inputs=[TxIn(TXID_A, 0, 144), TxIn(TXID_B, 3)],
        outputs=[TxOut(60_000, pk(PUB[0])), TxOut(39_000, TO_LOCAL)],
        locktime=0,
    )


def signed_tx() -> Tx:
    tx = sample_tx()
    sig = tx.sign_input(0, PRIV[3], 50_000, TO_LOCAL)
    sigs = {PUB[0]: tx.sign_input(1, PRIV[0], 50_000, FUNDING),
            PUB[1]: tx.sign_input(1, PRIV[1], 50_000, FUNDING)}
    tx.witnesses = [Witness((1,), {PUB[3]: sig}), Witness((), sigs)]
    return tx


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


# --- txid -----------------------------------------------------------------------------


def test_txid_is_double_sha256_of_canonical_array():
    tx = sample_tx()
    body = [2, [[TXID_A, 0, 144], [TXID_B, 3, 0xFFFF_FFFE]],
            [[60_000, pk(PUB[0])], [39_000, TO_LOCAL]], 0]
    assert tx.txid == sha256d(msgpack.packb(body, use_bin_type=True))
    assert len(tx.txid) == 32 and tx.txid_hex == tx.txid.hex()


def test_txid_does_not_depend_on_witnesses():
    assert signed_tx().txid == sample_tx().txid


@pytest.mark.parametrize(
    "change",
    [
        lambda tx: setattr(tx, "version", 1),
        lambda tx: setattr(tx, "locktime", 1),
        lambda tx: tx.inputs.__setitem__(0, TxIn(TXID_A, 0, 145)),
        lambda tx: tx.inputs.__setitem__(0, TxIn(TXID_A, 1, 144)),
        lambda tx: tx.inputs.__setitem__(0, TxIn(TXID_B, 0, 144)),
        lambda tx: tx.outputs.__setitem__(0, TxOut(60_001, pk(PUB[0]))),
        lambda tx: tx.outputs.__setitem__(0, TxOut(60_000, pk(PUB[1]))),
        lambda tx: tx.outputs.reverse(),
    ],
)
def test_txid_commits_to_every_field(change):
    tx = sample_tx()
    change(tx)
    assert tx.txid != sample_tx().txid


def test_outpoints():
    txin = TxIn(TXID_A, 2)
    assert txin.sequence == 0xFFFF_FFFE
    assert txin.outpoint == OutPoint(TXID_A, 2)
    assert {txin.outpoint: 1}[OutPoint(TXID_A, 2)] == 1
    assert str(txin.outpoint) == f"{TXID_A.hex()}:2"


# --- wire form ------------------------------------------------------------------------


def test_to_wire_shape():
    wire = signed_tx().to_wire()
    assert set(wire) == {"version", "inputs", "outputs", "locktime", "witnesses"}
    assert wire["inputs"][0] == {"txid": TXID_A, "vout": 0, "sequence": 144}
    assert wire["outputs"][1] == {"amount_sat": 39_000, "cond": TO_LOCAL}
    assert wire["witnesses"][0]["path"] == [1]


@pytest.mark.parametrize("make", [sample_tx, signed_tx])
def test_round_trips(make):
    tx = make()
    assert Tx.from_wire(tx.to_wire()) == tx
    data = tx.serialize()
    assert Tx.deserialize(data) == tx
    assert Tx.deserialize(data).txid == tx.txid
    assert tx.size == len(data)


def test_from_wire_accepts_missing_witnesses_and_no_inputs():
    wire = sample_tx().to_wire()
    del wire["witnesses"]
    assert Tx.from_wire(wire) == sample_tx()
    genesis = Tx([], [TxOut(MAX_MONEY_SAT, pk(PUB[0]))])
    assert Tx.deserialize(genesis.serialize()) == genesis


def _set(path: tuple, value: object):
    def change(wire: dict) -> None:
        node = wire
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _delete(path: tuple):
    def change(wire: dict) -> None:
        node = wire
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


@pytest.mark.parametrize(
    "change, fragment",
    [
        (_set(("version",), "2"), "version: expected an integer, got str"),
        (_set(("version",), -1), "version: -1 out of range"),
        (_set(("locktime",), 2**32), "locktime: 4294967296 out of range"),
        (_set(("locktime",), True), "locktime: expected an integer, got bool"),
        (_delete(("locktime",)), "tx: missing ['locktime']"),
        (_set(("extra",), 1), "tx: unknown ['extra']"),
        (_set(("inputs",), {}), "inputs: expected a list"),
        (_set(("inputs",), [{"txid": TXID_A, "vout": 0, "sequence": 0}] * 2), "spends"),
        (_set(("inputs", 0), [TXID_A, 0, 0]), "inputs[0]: expected a map"),
        (_delete(("inputs", 1, "sequence")), "inputs[1]: missing ['sequence']"),
        (_set(("inputs", 0, "txid"), TXID_A[:31]), "inputs[0].txid: expected 32 bytes, got 31"),
        (_set(("inputs", 0, "txid"), TXID_A.hex()), "inputs[0].txid: expected bytes, got str"),
        (_set(("inputs", 1, "vout"), -1), "inputs[1].vout: -1 out of range"),
        (_set(("inputs", 1, "vout"), MAX_TX_OUTPUTS), "inputs[1].vout"),
        (_set(("inputs", 1, "sequence"), 2**32), "inputs[1].sequence"),
        (_set(("outputs",), None), "outputs: expected a list, got NoneType"),
        (_set(("outputs", 1, "amount_sat"), -1), "outputs[1].amount_sat: -1 out of range"),
        (_set(("outputs", 1, "amount_sat"), MAX_MONEY_SAT + 1), "outputs[1].amount_sat"),
        (_set(("outputs", 1, "amount_sat"), 1.5), "outputs[1].amount_sat: expected an integer"),
        (_set(("outputs", 1, "amount_sat"), MAX_MONEY_SAT), "outputs: total"),
        (_set(("outputs", 0, "cond"), ["pk", b"\x02" * 32]), "outputs[0].cond: cond[1]: key must be 33"),
        (_set(("outputs", 0, "cond"), ["older", 0]), "outputs[0].cond: cond[1]: older blocks"),
        (_delete(("outputs", 0, "cond")), "outputs[0]: missing ['cond']"),
        (_set(("witnesses",), [{"path": [], "sigs": {}, "preimages": {}}]), "1 witnesses for 2 inputs"),
        (_set(("witnesses", 1), {"path": []}), "witnesses[1]: witness must have keys"),
        (_set(("witnesses", 0, "sigs"), {PUB[0]: b"\x00" * 70}), "witnesses[0]: witness sigs"),
        (_set(("witnesses",), "none"), "witnesses: expected a list"),
    ],
)
def test_from_wire_errors_name_the_field(change, fragment):
    wire = copy.deepcopy(signed_tx().to_wire())
    change(wire)
    with pytest.raises(TxFormatError) as info:
        Tx.from_wire(wire)
    assert fragment in str(info.value)
    assert info.value.code == "bad_tx"


def test_input_and_output_count_limits():
    wire = sample_tx().to_wire()
    wire["inputs"] = [{"txid": TXID_A, "vout": i % MAX_TX_OUTPUTS, "sequence": 0}
                      for i in range(MAX_TX_INPUTS + 1)]
    with pytest.raises(TxFormatError, match="inputs: 2001 items exceeds"):
        Tx.from_wire(wire)
    wire = sample_tx().to_wire()
    wire["outputs"] = [{"amount_sat": 1, "cond": ["older", 1]}] * (MAX_TX_OUTPUTS + 1)
    with pytest.raises(TxFormatError, match="outputs: 2001 items exceeds"):
        Tx.from_wire(wire)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "malformed msgpack"),
        (b"\xc1", "malformed msgpack"),
        (sample_tx().serialize() + b"\x00", "malformed msgpack"),
        (sample_tx().serialize()[:-1], "malformed msgpack"),
        (msgpack.packb({1: 2}), "malformed msgpack"),  # strict map keys
        (msgpack.packb([1, 2]), "tx: expected a map, got list"),
        (msgpack.packb({"version": 1.5}), "tx: missing"),
        (b"\x00" * (MAX_TX_BYTES + 1), f"exceeds {MAX_TX_BYTES}"),
        ("not bytes", "expected bytes, got str"),
    ],
)
def test_deserialize_errors(data, fragment):
    with pytest.raises(TxFormatError) as info:
        Tx.deserialize(data)
    assert fragment in str(info.value)


# --- sighash and signing --------------------------------------------------------------


def test_sighash_commits_to_tag_txid_index_amount_and_cond():
    tx = sample_tx()
    digest = sighash(tx, 0, 50_000, TO_LOCAL)
    packed = msgpack.packb([SIGHASH_TAG, tx.txid, 0, 50_000, TO_LOCAL], use_bin_type=True)
    assert digest == sha256d(packed)
    others = {sighash(tx, 1, 50_000, TO_LOCAL), sighash(tx, 0, 50_001, TO_LOCAL),
              sighash(tx, 0, 50_000, pk(PUB[0]))}
    tx.locktime = 5
    others.add(sighash(tx, 0, 50_000, TO_LOCAL))
    assert digest not in others and len(others) == 4
    assert sighash(signed_tx(), 0, 50_000, TO_LOCAL) == digest


@pytest.mark.parametrize("index", [-1, 2])
def test_sighash_index_out_of_range(index):
    with pytest.raises(TxError):
        sighash(sample_tx(), index, 1, TO_LOCAL)


def test_sign_input_verifies_against_sighash():
    tx = sample_tx()
    sig = tx.sign_input(1, PRIV[0], 50_000, FUNDING)
    assert len(sig) == 64
    assert verify(PUB[0], sighash(tx, 1, 50_000, FUNDING), sig)
    assert sig == sign(PRIV[0], sighash(tx, 1, 50_000, FUNDING))
    assert not verify(PUB[0], sighash(tx, 1, 50_001, FUNDING), sig)


def test_evaluate_input_end_to_end():
    tx = signed_tx()
    assert tx.evaluate_input(1, 50_000, FUNDING, 700, 600) == SpendResult(False, "multi(2)")
    with pytest.raises(PolicyNotSatisfied) as info:
        tx.evaluate_input(0, 50_000, TO_LOCAL, 700, 600)
    assert (info.value.reason, info.value.blocks_needed) == ("relative_timelock", 44)
    assert tx.evaluate_input(0, 50_000, TO_LOCAL, 744, 600).branch == "or[1]/and(pk,older(144))"
    with pytest.raises(PolicyNotSatisfied) as info:  # lying about the spent amount
        tx.evaluate_input(1, 50_001, FUNDING, 700, 600)
    assert info.value.reason == "bad_signature"


def test_evaluate_input_unsigned_and_mismatched_witnesses():
    tx = sample_tx()
    with pytest.raises(PolicyNotSatisfied) as info:
        tx.evaluate_input(1, 50_000, FUNDING, 700, 600)
    assert info.value.reason == "missing_signature"
    tx.witnesses = [Witness()]
    with pytest.raises(TxError):
        tx.evaluate_input(0, 50_000, FUNDING, 700, 600)


def test_spend_context_uses_tx_fields():
    tx = sample_tx()
    tx.locktime = 77
    ctx = tx.spend_context(0, 50_000, TO_LOCAL, 700, 600)
    assert (ctx.locktime, ctx.sequence, ctx.spend_height, ctx.confirmed_height) == (77, 144, 700, 600)
    assert ctx.sighash == sighash(tx, 0, 50_000, TO_LOCAL)


# --- finality -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "locktime, sequence, height, final",
    [
        (0, 0, 0, True),
        (100, 0xFFFF_FFFE, 99, False),
        (100, 0xFFFF_FFFE, 100, True),
        (100, 0xFFFF_FFFE, 101, True),
        (100, 0xFFFF_FFFF, 1, True),  # every input final: locktime ignored (Bitcoin)
        (0x2000_1234, 0x8000_0000, 1, True),  # BOLT 3 commitment: a time, long past
    ],
)
def test_is_final(locktime, sequence, height, final):
    tx = Tx([TxIn(TXID_A, 0, sequence)], [TxOut(1, pk(PUB[0]))], locktime=locktime)
    assert is_final(tx, height) is final
    assert blocks_until_final(tx, height) == (0 if final else locktime - height)


def test_one_non_final_sequence_enforces_locktime():
    tx = Tx([TxIn(TXID_A, 0, 0xFFFF_FFFF), TxIn(TXID_B, 0, 0)], [], locktime=100)
    assert not is_final(tx, 99)
    assert blocks_until_final(tx, 90) == 10


# --- property tests -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_deserialize_random_bytes_only_raises_decode_errors(data):
    try:
        Tx.deserialize(data)
    except DecodeError:
        pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 2**64 - 1) | st.text(max_size=3)
    | st.binary(max_size=34) | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)


def _leaf_paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return []
    paths = []
    for key, value in items:
        paths.append(prefix + (key,))
        paths.extend(_leaf_paths(value, prefix + (key,)))
    return paths


_WIRE = signed_tx().to_wire()
_PATHS = _leaf_paths(_WIRE)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PATHS), _values)
def test_mutated_wire_only_raises_decode_errors(path, value):
    wire = copy.deepcopy(_WIRE)
    _set(path, value)(wire)
    try:
        tx = Tx.deserialize(msgpack.packb(wire, use_bin_type=True))
    except DecodeError:
        return
    assert Tx.deserialize(tx.serialize()) == tx
