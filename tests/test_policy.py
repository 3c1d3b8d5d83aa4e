"""Spending policies: format checks, every node's evaluation, witnesses, signatures."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from coincurve import PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import DecodeError
from emulator.policy import (
    MAX_MULTI_KEYS,
    MAX_POLICY_DEPTH,
    MAX_THRESH_SUBS,
    MAX_WITNESS_ITEMS,
    PolicyFormatError,
    PolicyNotSatisfied,
    SigningError,
    SpendContext,
    SpendResult,
    Witness,
    after,
    and_,
    check_policy,
    describe,
    evaluate,
    multi,
    older,
    or_,
    pk,
    revocation,
    revocation_branch_path,
    sha256,
    sign,
    thresh,
    verify,
)

PRIV = [hashlib.sha256(b"lnemu policy test key %d" % i).digest() for i in range(6)]
PUB = [PrivateKey(key).public_key.format() for key in PRIV]
MSG = hashlib.sha256(b"the spending tx").digest()
PRE = [hashlib.sha256(b"preimage %d" % i).digest() for i in range(4)]
HASH = [hashlib.sha256(p).digest() for p in PRE]
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGS = {i: sign(PRIV[i], MSG) for i in range(len(PRIV))}  # signing once keeps tests fast


def ctx(**changes: int | bytes) -> SpendContext:
    fields = {"sighash": MSG, "locktime": 0, "sequence": 0xFFFF_FFFE,
              "spend_height": 1000, "confirmed_height": 500}
    fields.update(changes)
    return SpendContext(**fields)


def wit(path: tuple[int, ...] = (), keys: tuple[int, ...] = (), pre: tuple[int, ...] = ()) -> Witness:
    return Witness(path, {PUB[i]: SIGS[i] for i in keys}, {HASH[i]: PRE[i] for i in pre})


def refused(cond: list, witness: Witness, context: SpendContext | None = None) -> PolicyNotSatisfied:
    with pytest.raises(PolicyNotSatisfied) as info:
        evaluate(cond, witness, context or ctx())
    return info.value


# --- pk, multi, sha256 ----------------------------------------------------------------


def test_pk_satisfied():
    assert evaluate(pk(PUB[0]), wit(keys=(0,)), ctx()) == SpendResult(revocation=False, branch="pk")


def test_pk_missing_signature():
    err = refused(pk(PUB[0]), wit())
    assert (err.reason, err.branch, err.blocks_needed) == ("missing_signature", "pk", None)
    assert err.code == "policy_not_satisfied"


def test_pk_signature_by_another_key_is_bad():
    err = refused(pk(PUB[0]), Witness((), {PUB[0]: SIGS[1]}))
    assert err.reason == "bad_signature"


def test_pk_signature_over_another_message_is_bad():
    err = refused(pk(PUB[0]), wit(keys=(0,)), ctx(sighash=hashlib.sha256(b"other").digest()))
    assert err.reason == "bad_signature"


def test_pk_extra_signature_is_unused_witness():
    assert refused(pk(PUB[0]), wit(keys=(0, 1))).reason == "unused_witness"


def test_multi_satisfied_by_any_k_keys():
    cond = multi(2, PUB[:3])
    for keys in [(0, 1), (0, 2), (1, 2)]:
        assert evaluate(cond, wit(keys=keys), ctx()).branch == "multi(2)"


def test_multi_too_few_signatures():
    err = refused(multi(2, PUB[:3]), wit(keys=(1,)))
    assert (err.reason, err.branch) == ("missing_signature", "multi(2)")
    assert "1 of 2" in str(err)


def test_multi_bad_signature():
    err = refused(multi(2, PUB[:3]), Witness((), {PUB[0]: SIGS[0], PUB[2]: SIGS[1]}))
    assert err.reason == "bad_signature"


def test_multi_more_than_k_signatures_is_unused_witness():
    assert refused(multi(2, PUB[:3]), wit(keys=(0, 1, 2))).reason == "unused_witness"


def test_multi_signature_by_unlisted_key_does_not_count():
    err = refused(multi(2, PUB[:3]), wit(keys=(0, 4)))
    assert err.reason == "missing_signature"
    assert refused(multi(1, PUB[:3]), wit(keys=(0, 4))).reason == "unused_witness"


def test_sha256_satisfied():
    assert evaluate(sha256(HASH[0]), wit(pre=(0,)), ctx()).branch == "sha256"


def test_sha256_missing_preimage():
    assert refused(sha256(HASH[0]), wit(pre=(1,))).reason == "missing_preimage"


def test_sha256_wrong_preimage():
    err = refused(sha256(HASH[0]), Witness((), {}, {HASH[0]: PRE[1]}))
    assert (err.reason, err.branch) == ("wrong_preimage", "sha256")


def test_sha256_extra_preimage_is_unused_witness():
    assert refused(sha256(HASH[0]), wit(pre=(0, 1))).reason == "unused_witness"


# --- timelocks ------------------------------------------------------------------------


@pytest.mark.parametrize("spend_height, needed", [(500, 144), (600, 44), (643, 1)])
def test_older_too_early_says_how_many_blocks(spend_height, needed):
    err = refused(older(144), wit(), ctx(sequence=144, spend_height=spend_height))
    assert (err.reason, err.blocks_needed) == ("relative_timelock", needed)
    assert str(err) == f"branch older(144): relative timelock, {needed} more blocks needed"


@pytest.mark.parametrize("spend_height", [644, 5000])
def test_older_satisfied_once_deep_enough(spend_height):
    result = evaluate(older(144), wit(), ctx(sequence=144, spend_height=spend_height))
    assert result.branch == "older(144)"


def test_older_accepts_larger_sequence_lock():
    assert evaluate(older(10), wit(), ctx(sequence=20, spend_height=520)).branch == "older(10)"


@pytest.mark.parametrize(
    "sequence, reason",
    [
        (0xFFFF_FFFE, "sequence_disabled"),
        ((1 << 31) | 144, "sequence_disabled"),
        ((1 << 22) | 144, "sequence_time_based"),
        (143, "sequence_too_low"),
        (0x1_0000 | 5, "sequence_too_low"),  # only the low 16 bits count
    ],
)
def test_older_sequence_rules(sequence, reason):
    err = refused(older(144), wit(), ctx(sequence=sequence, spend_height=10_000))
    assert (err.reason, err.blocks_needed) == (reason, None)


def test_after_satisfied_at_and_above_height():
    assert evaluate(after(700), wit(), ctx(locktime=700)).branch == "after(700)"
    assert evaluate(after(700), wit(), ctx(locktime=900)).branch == "after(700)"


def test_after_locktime_too_low():
    err = refused(after(700), wit(), ctx(locktime=699))
    assert (err.reason, err.blocks_needed) == ("absolute_timelock", None)


def test_after_refuses_time_based_locktime():
    assert refused(after(700), wit(), ctx(locktime=500_000_000)).reason == "locktime_time_based"


def test_after_refuses_final_sequence():
    assert refused(after(700), wit(), ctx(locktime=800, sequence=0xFFFF_FFFF)).reason == "sequence_final"


# --- and, or, thresh, rev -------------------------------------------------------------


def test_and_needs_both():
    cond = and_(pk(PUB[0]), sha256(HASH[0]))
    assert evaluate(cond, wit(keys=(0,), pre=(0,)), ctx()).branch == "and(pk,sha256)"
    assert refused(cond, wit(pre=(0,))).reason == "missing_signature"
    assert refused(cond, wit(keys=(0,))).reason == "missing_preimage"


def test_or_takes_the_chosen_side():
    cond = or_(pk(PUB[0]), pk(PUB[1]))
    assert evaluate(cond, wit((0,), keys=(0,)), ctx()).branch == "or[0]/pk"
    assert evaluate(cond, wit((1,), keys=(1,)), ctx()).branch == "or[1]/pk"
    err = refused(cond, wit((1,), keys=(0,)))
    assert (err.reason, err.branch) == ("missing_signature", "or[1]/pk")


@pytest.mark.parametrize("path", [(), (2,), (0, 0)])
def test_or_bad_path(path):
    assert refused(or_(pk(PUB[0]), pk(PUB[1])), wit(path, keys=(0,))).reason == "bad_path"


def test_thresh_satisfied_by_chosen_subs():
    cond = thresh(2, [pk(PUB[0]), sha256(HASH[0]), pk(PUB[1])])
    result = evaluate(cond, wit((0, 2), keys=(0, 1)), ctx())
    assert result.branch == "thresh[0,2](pk,pk)"
    assert evaluate(cond, wit((1, 2), keys=(1,), pre=(0,)), ctx()).branch == "thresh[1,2](sha256,pk)"


@pytest.mark.parametrize("path", [(2, 0), (1, 1), (0, 3), (0,)])
def test_thresh_bad_path(path):
    cond = thresh(2, [pk(PUB[0]), pk(PUB[1]), pk(PUB[2])])
    assert refused(cond, wit(path, keys=(0, 1, 2))).reason == "bad_path"


def test_thresh_chosen_sub_failing_names_it():
    cond = thresh(1, [pk(PUB[0]), older(10)])
    err = refused(cond, wit((1,)), ctx(sequence=10, spend_height=505))
    assert (err.reason, err.branch, err.blocks_needed) == ("relative_timelock", "thresh[1]/older(10)", 5)


def test_rev_marks_revocation():
    result = evaluate(revocation(pk(PUB[0])), wit(keys=(0,)), ctx())
    assert result == SpendResult(revocation=True, branch="rev:pk")


# --- BOLT 3 to_local ------------------------------------------------------------------

REVOCATION, DELAYED = 0, 1
TO_LOCAL = or_(revocation(pk(PUB[REVOCATION])), and_(pk(PUB[DELAYED]), older(144)))


def test_to_local_delayed_branch_too_early():
    context = ctx(sequence=144, confirmed_height=500, spend_height=607)
    err = refused(TO_LOCAL, wit((1,), keys=(DELAYED,)), context)
    assert (err.reason, err.blocks_needed, err.branch) == ("relative_timelock", 37, "or[1]/older(144)")
    assert str(err) == "branch or[1]/older(144): relative timelock, 37 more blocks needed"


def test_to_local_delayed_branch_after_delay():
    context = ctx(sequence=144, confirmed_height=500, spend_height=644)
    result = evaluate(TO_LOCAL, wit((1,), keys=(DELAYED,)), context)
    assert result == SpendResult(revocation=False, branch="or[1]/and(pk,older(144))")


def test_to_local_revocation_branch_at_once():
    context = ctx(sequence=0xFFFF_FFFE, confirmed_height=500, spend_height=501)
    result = evaluate(TO_LOCAL, wit((0,), keys=(REVOCATION,)), context)
    assert result == SpendResult(revocation=True, branch="or[0]/rev:pk")


def test_to_local_revocation_key_cannot_open_delayed_branch():
    context = ctx(sequence=144, spend_height=10_000)
    err = refused(TO_LOCAL, Witness((1,), {PUB[DELAYED]: SIGS[REVOCATION]}), context)
    assert err.reason == "bad_signature"


# --- format ---------------------------------------------------------------------------

KEY = PUB[0]
_deep = pk(KEY)
for _ in range(MAX_POLICY_DEPTH):
    _deep = ["rev", _deep]


@pytest.mark.parametrize(
    "cond, fragment",
    [
        ("pk", "non-empty list"),
        ([], "non-empty list"),
        (("pk", KEY), "non-empty list"),
        (["nope", KEY], "unknown policy node 'nope'"),
        ([7, KEY], "unknown policy node 7"),
        (["pk"], "pk takes 1 argument(s), got 0"),
        (["pk", KEY, KEY], "pk takes 1 argument(s), got 2"),
        (["and", ["pk", KEY]], "and takes 2 argument(s), got 1"),
        (["pk", KEY[:32]], "key must be 33 bytes, got 32"),
        (["pk", "02" * 33], "key must be bytes"),
        (["pk", b"\x04" + KEY[1:]], "not a valid secp256k1 point"),
        (["pk", b"\x02" + b"\xff" * 32], "not a valid secp256k1 point"),
        (["multi", 0, [KEY]], "multi k 0 out of range [1, 1]"),
        (["multi", 2, [KEY]], "multi k 2 out of range"),
        (["multi", True, [KEY]], "multi k must be an integer"),
        (["multi", 1, []], "multi keys must have 1 to"),
        (["multi", 1, KEY], "multi keys must be a list"),
        (["multi", 1, [KEY, KEY]], "must be distinct"),
        (["multi", 1, [KEY, b"\x02" + b"\xff" * 32]], "cond[2][1]: key"),
        (["multi", 1, PUB * 4], f"1 to {MAX_MULTI_KEYS} items"),
        (["sha256", b"\x00" * 31], "sha256 hash must be 32 bytes, got 31 bytes"),
        (["sha256", "x" * 32], "sha256 hash must be 32 bytes, got str"),
        (["older", 0], "older blocks 0 out of range [1, 65535]"),
        (["older", 65536], "older blocks 65536 out of range"),
        (["older", 1.0], "older blocks must be an integer"),
        (["after", 0], "after height 0 out of range"),
        (["after", 500_000_000], "after height 500000000 out of range"),
        (["thresh", 0, [["pk", KEY]]], "thresh k 0 out of range"),
        (["thresh", 2, [["pk", KEY]]], "thresh k 2 out of range"),
        (["thresh", 1, []], "thresh subs must have 1 to"),
        (["thresh", 1, [["older", 1]] * (MAX_THRESH_SUBS + 1)], "thresh subs must have 1 to"),
        (["or", ["pk", KEY], ["and", ["pk", KEY], ["older", -1]]], "cond[2][2][1]: older blocks -1"),
        (["rev", ["rev", "pk"]], "cond[1][1]: a policy node"),
        (_deep, f"deeper than {MAX_POLICY_DEPTH} levels"),
        (["thresh", 1, [["multi", 1, PUB]] * 20], "more than 128 nodes"),
    ],
)
def test_check_policy_errors(cond, fragment):
    with pytest.raises(PolicyFormatError) as info:
        check_policy(cond)
    assert fragment in str(info.value)
    assert isinstance(info.value, DecodeError) and info.value.code == "bad_policy"


def test_depth_limit_is_inclusive():
    check_policy(_deep[1])  # exactly MAX_POLICY_DEPTH levels


def test_builders_make_plain_lists():
    assert pk(KEY) == ["pk", KEY]
    assert multi(1, (KEY, PUB[1])) == ["multi", 1, [KEY, PUB[1]]]
    assert sha256(HASH[0]) == ["sha256", HASH[0]]
    assert older(5) == ["older", 5] and after(9) == ["after", 9]
    assert and_(older(1), after(2)) == ["and", ["older", 1], ["after", 2]]
    assert or_(older(1), after(2)) == ["or", ["older", 1], ["after", 2]]
    assert thresh(1, [older(1)]) == ["thresh", 1, [["older", 1]]]
    assert revocation(older(1)) == ["rev", ["older", 1]]


def test_builders_check_their_input():
    with pytest.raises(PolicyFormatError):
        pk(b"\x02" * 32)
    with pytest.raises(PolicyFormatError):
        older(0)


def test_evaluate_checks_the_policy():
    with pytest.raises(PolicyFormatError):
        evaluate(["pk", b"short"], wit(), ctx())


# --- witness wire form ----------------------------------------------------------------


def test_witness_round_trip():
    witness = wit((1, 0), keys=(2, 0), pre=(1,))
    wire = witness.to_wire()
    assert wire == {"path": [1, 0], "sigs": {PUB[0]: SIGS[0], PUB[2]: SIGS[2]},
                    "preimages": {HASH[1]: PRE[1]}}
    assert list(wire["sigs"]) == sorted(wire["sigs"])
    assert Witness.from_wire(wire) == witness


def test_witness_path_list_becomes_tuple_and_maps_are_copied():
    sigs = {PUB[0]: SIGS[0]}
    witness = Witness([1, 0], sigs)
    sigs[PUB[1]] = SIGS[1]
    assert witness.path == (1, 0) and witness.sigs == {PUB[0]: SIGS[0]}


@pytest.mark.parametrize(
    "obj, fragment",
    [
        ([], "witness must be a map"),
        ({"path": [], "sigs": {}}, "must have keys"),
        ({"path": [], "sigs": {}, "preimages": {}, "x": 1}, "must have keys"),
        ({"path": (), "sigs": {}, "preimages": {}}, "path must be a list"),
        ({"path": [True], "sigs": {}, "preimages": {}}, "path item True"),
        ({"path": [-1], "sigs": {}, "preimages": {}}, "path item -1"),
        ({"path": [MAX_THRESH_SUBS], "sigs": {}, "preimages": {}}, "path item"),
        ({"path": [0] * (MAX_WITNESS_ITEMS + 1), "sigs": {}, "preimages": {}}, "path longer"),
        ({"path": [], "sigs": [], "preimages": {}}, "sigs must be a map"),
        ({"path": [], "sigs": {KEY[:32]: SIGS[0]}, "preimages": {}}, "keys must be 33 bytes"),
        ({"path": [], "sigs": {"k": SIGS[0]}, "preimages": {}}, "keys must be 33 bytes"),
        ({"path": [], "sigs": {KEY: SIGS[0][:63]}, "preimages": {}}, "values must be 64 bytes"),
        ({"path": [], "sigs": {}, "preimages": {HASH[0]: PRE[0] + b"x"}}, "values must be 32 bytes"),
        ({"path": [], "sigs": {}, "preimages": {HASH[0][:1]: PRE[0]}}, "keys must be 32 bytes"),
        ({"path": [], "sigs": {},
          "preimages": {bytes([i]) * 32: PRE[0] for i in range(MAX_WITNESS_ITEMS + 1)}},
         "more than"),
    ],
)
def test_witness_from_wire_errors(obj, fragment):
    with pytest.raises(PolicyFormatError) as info:
        Witness.from_wire(obj)
    assert fragment in str(info.value)


# --- spender helpers ------------------------------------------------------------------


def test_revocation_branch_path():
    assert revocation_branch_path(TO_LOCAL) == (0,)
    assert revocation_branch_path(pk(KEY)) is None
    assert revocation_branch_path(or_(pk(KEY), revocation(pk(PUB[1])))) == (1,)
    nested = and_(or_(pk(KEY), older(5)), or_(older(1), revocation(or_(pk(PUB[1]), pk(PUB[2])))))
    assert revocation_branch_path(nested) == (0, 1, 0)
    in_thresh = thresh(2, [older(1), older(2), revocation(pk(KEY)), older(3)])
    assert revocation_branch_path(in_thresh) == (0, 2)


def test_revocation_branch_path_spends_the_revocation_branch():
    htlc = or_(revocation(pk(PUB[0])), or_(and_(pk(PUB[1]), sha256(HASH[0])), pk(PUB[2])))
    path = revocation_branch_path(htlc)
    assert evaluate(htlc, wit(path, keys=(0,)), ctx()).revocation is True


def test_describe():
    assert describe(TO_LOCAL) == (
        f"or(rev:pk({PUB[0][:4].hex()}),and(pk({PUB[1][:4].hex()}),older(144)))"
    )
    cond = thresh(1, [multi(1, [PUB[0]]), sha256(HASH[0]), after(7)])
    assert describe(cond) == f"thresh(1,multi(1,{PUB[0][:4].hex()}),sha256({HASH[0][:4].hex()}),after(7))"


# --- signatures -----------------------------------------------------------------------


def test_signature_is_64_byte_compact_low_s():
    sig = SIGS[0]
    assert len(sig) == 64
    assert int.from_bytes(sig[32:], "big") <= ORDER // 2
    assert verify(PUB[0], MSG, sig)
    assert sign(PRIV[0], MSG) == sig  # RFC 6979: deterministic


@pytest.mark.parametrize("privkey, msg", [(PRIV[0], MSG[:31]), (PRIV[0], "x" * 32),
                                          (b"\x00" * 32, MSG), (PRIV[0][:31], MSG)])
def test_sign_refuses_bad_input(privkey, msg):
    with pytest.raises(SigningError):
        sign(privkey, msg)


def test_high_s_twin_is_refused():
    r, s = SIGS[0][:32], int.from_bytes(SIGS[0][32:], "big")
    assert not verify(PUB[0], MSG, r + (ORDER - s).to_bytes(32, "big"))


@pytest.mark.parametrize(
    "pubkey, msg, sig",
    [
        (PUB[1], MSG, SIGS[0]),
        (PUB[0], hashlib.sha256(b"x").digest(), SIGS[0]),
        (PUB[0], MSG, SIGS[0][:63]),
        (PUB[0], MSG, SIGS[0] + b"\x00"),
        (PUB[0], MSG[:31], SIGS[0]),
        (b"\x02" * 33, MSG, SIGS[0]),
        (b"\x05" + PUB[0][1:], MSG, SIGS[0]),
        (PUB[0][:32], MSG, SIGS[0]),
        (PUB[0], MSG, b"\x00" * 32 + SIGS[0][32:]),
        (PUB[0], MSG, ORDER.to_bytes(32, "big") + SIGS[0][32:]),
        (PUB[0], MSG, b"\xff" * 64),
        ("not bytes", MSG, SIGS[0]),
        (PUB[0], None, SIGS[0]),
        (PUB[0], MSG, bytearray(SIGS[0])),
    ],
)
def test_verify_returns_false_on_garbage(pubkey, msg, sig):
    assert verify(pubkey, msg, sig) is False


# --- property tests -------------------------------------------------------------------

PROPERTY_CTX = ctx(locktime=100, sequence=100, spend_height=1000, confirmed_height=500)


@dataclass
class Case:
    """A random policy with the branch to take and what that branch needs."""

    cond: list
    path: list[int] = field(default_factory=list)
    pks: list[int] = field(default_factory=list)
    multis: list[tuple[int, list[int]]] = field(default_factory=list)
    hashes: set[int] = field(default_factory=set)
    revocation: bool = False

    def absorb(self, other: Case) -> None:
        self.path += other.path
        self.pks += other.pks
        self.multis += other.multis
        self.hashes |= other.hashes
        self.revocation |= other.revocation

    def witness(self) -> Witness:
        signers = set(self.pks)
        for k, keys in self.multis:  # add the first missing listed keys, as evaluate reads them
            missing = k - sum(1 for i in keys if i in signers)
            signers |= set([i for i in keys if i not in signers][:max(missing, 0)])
        return wit(tuple(self.path), tuple(signers), tuple(self.hashes))


@st.composite
def leaf_cases(draw) -> Case:
    kind = draw(st.sampled_from(["pk", "multi", "sha256", "older", "after"]))
    if kind == "pk":
        i = draw(st.integers(0, len(PUB) - 1))
        return Case(pk(PUB[i]), pks=[i])
    if kind == "multi":
        keys = draw(st.lists(st.integers(0, len(PUB) - 1), min_size=1, max_size=3, unique=True))
        k = draw(st.integers(1, len(keys)))
        return Case(multi(k, [PUB[i] for i in keys]), multis=[(k, keys)])
    if kind == "sha256":
        i = draw(st.integers(0, len(HASH) - 1))
        return Case(sha256(HASH[i]), hashes={i})
    if kind == "older":
        return Case(older(draw(st.integers(1, 100))))
    return Case(after(draw(st.integers(1, 100))))


@st.composite
def spend_cases(draw, depth: int = 0) -> Case:
    kinds = ["leaf"] if depth >= 3 else ["leaf", "and", "or", "thresh", "rev"]
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(leaf_cases())
    if kind == "rev":
        sub = draw(spend_cases(depth + 1))
        case = Case(revocation(sub.cond), revocation=True)
        case.absorb(sub)
        return case
    if kind in ("and", "or"):
        left, right = draw(spend_cases(depth + 1)), draw(spend_cases(depth + 1))
        if kind == "and":
            case = Case(and_(left.cond, right.cond))
            case.absorb(left)
            case.absorb(right)
            return case
        choice = draw(st.integers(0, 1))
        case = Case(or_(left.cond, right.cond), path=[choice])
        case.absorb((left, right)[choice])
        return case
    subs = draw(st.lists(spend_cases(depth + 1), min_size=1, max_size=3))
    k = draw(st.integers(1, len(subs)))
    chosen = sorted(draw(st.lists(st.integers(0, len(subs) - 1), min_size=k, max_size=k, unique=True)))
    case = Case(thresh(k, [sub.cond for sub in subs]), path=list(chosen))
    for i in chosen:
        case.absorb(subs[i])
    return case


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(spend_cases())
def test_random_valid_spends_are_accepted(case):
    result = evaluate(case.cond, case.witness(), PROPERTY_CTX)
    assert result.revocation == case.revocation


@FAST
@given(spend_cases(), st.data())
def test_any_single_byte_change_to_a_signature_or_preimage_is_refused(case, data):
    witness = case.witness()
    items = [("sigs", key) for key in witness.sigs] + [("preimages", key) for key in witness.preimages]
    if not items:
        return
    where, key = data.draw(st.sampled_from(items))
    value = bytearray(getattr(witness, where)[key])
    value[data.draw(st.integers(0, len(value) - 1))] ^= data.draw(st.integers(1, 255))
    changed = {**getattr(witness, where), key: bytes(value)}
    tampered = Witness(witness.path, **{**{"sigs": witness.sigs, "preimages": witness.preimages},
                                        where: changed})
    with pytest.raises(PolicyNotSatisfied) as info:
        evaluate(case.cond, tampered, PROPERTY_CTX)
    assert info.value.reason == ("bad_signature" if where == "sigs" else "wrong_preimage")


_scalars = (st.none() | st.booleans() | st.integers(-2, 2**33) | st.floats(allow_nan=False)
            | st.text(max_size=4) | st.binary(max_size=70) | st.sampled_from([SIGS[0], PUB[0], HASH[0]]))
_objects = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["path", "sigs", "preimages"]) | st.binary(max_size=33),
                      children, max_size=4),
    max_leaves=12,
)
_witness_like = st.fixed_dictionaries({
    "path": st.lists(st.integers(-1, 25), max_size=5) | _objects,
    "sigs": st.dictionaries(st.binary(min_size=32, max_size=34), st.binary(min_size=63, max_size=65),
                            max_size=3) | _objects,
    "preimages": st.dictionaries(st.binary(min_size=31, max_size=33),
                                 st.binary(min_size=31, max_size=33), max_size=3) | _objects,
})


@settings(max_examples=200, deadline=None)
@given(_objects | _witness_like)
def test_witness_from_wire_only_raises_decode_errors(obj):
    try:
        witness = Witness.from_wire(obj)
    except DecodeError:
        return
    assert Witness.from_wire(witness.to_wire()) == witness
