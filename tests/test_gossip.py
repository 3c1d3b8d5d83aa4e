"""BOLT 7 gossip messages: construction, signing, verification, fees."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.envelope import check_body
from emulator.errors import DecodeError
from emulator.identity import child_secret, node_secret, pubkey
from emulator.messages import SCHEMA
from peers.gossip import (
    BadBitcoinSignature,
    BadNodeSignature,
    BadUpdateSignature,
    GossipError,
    MalformedGossip,
    announcement_signatures,
    channel_announcement_body,
    complete_channel_announcement,
    fee_msat,
    format_short_channel_id,
    make_channel_update,
    make_node_announcement,
    signing_digest,
    update_direction,
    update_disabled,
    verify_channel_announcement,
    verify_channel_update,
    verify_node_announcement,
)

CHAIN_HASH = b"\x06" * 32
SCID = 500 << 40 | 3 << 16 | 1
ALICE, BOB, CAROL = (node_secret(7, name) for name in ("alice", "bob", "carol"))


def funding(secret: bytes) -> bytes:
    """The funding key secret a test node uses for its channels."""
    return child_secret(secret, "funding")


def announce_from(us: bytes, them: bytes, scid: int = SCID) -> dict:
    """What ``us`` builds: its own body, its signatures and the peer's, as exchanged."""
    body = channel_announcement_body(scid, pubkey(us), pubkey(them), pubkey(funding(us)),
                                     pubkey(funding(them)), CHAIN_HASH)
    for secret in (us, them):
        node_sig, bitcoin_sig = announcement_signatures(body, secret, funding(secret))
        body = complete_channel_announcement(body, pubkey(secret), node_sig, bitcoin_sig)
    return body


def update(secret: bytes = ALICE, **changes) -> dict:
    """A signed channel_update with defaults that ``changes`` override."""
    args = dict(short_channel_id=SCID, chain_hash=CHAIN_HASH, timestamp=1_000, direction=0,
                disabled=False, cltv_expiry_delta=40, htlc_minimum_msat=1_000,
                htlc_maximum_msat=500_000_000, fee_base_msat=1_000,
                fee_proportional_millionths=100)
    args.update(changes)
    return make_channel_update(secret, **args)


def flip(value):
    """The value with one byte (bytes) or one bit (int) changed."""
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 1])
    return value ^ 1


# --- channel_announcement -------------------------------------------------------------


def test_announcement_orders_nodes_and_swaps_bitcoin_keys():
    node_ids = sorted([pubkey(ALICE), pubkey(BOB)])
    for us, them in ((ALICE, BOB), (BOB, ALICE)):
        body = channel_announcement_body(SCID, pubkey(us), pubkey(them), pubkey(funding(us)),
                                         pubkey(funding(them)), CHAIN_HASH)
        assert [body["node_id_1"], body["node_id_2"]] == node_ids
        for side in (1, 2):
            owner = ALICE if body[f"node_id_{side}"] == pubkey(ALICE) else BOB
            assert body[f"bitcoin_key_{side}"] == pubkey(funding(owner))
        assert body["node_signature_1"] == bytes(64)
        check_body("channel_announcement", body)


def test_both_sides_build_the_same_signed_announcement():
    from_alice, from_bob = announce_from(ALICE, BOB), announce_from(BOB, ALICE)
    assert from_alice == from_bob
    verify_channel_announcement(from_alice)
    check_body("channel_announcement", from_alice)


def test_announcement_with_one_side_signed_does_not_verify():
    body = channel_announcement_body(SCID, pubkey(ALICE), pubkey(BOB), pubkey(funding(ALICE)),
                                     pubkey(funding(BOB)), CHAIN_HASH)
    sigs = announcement_signatures(body, ALICE, funding(ALICE))
    half = complete_channel_announcement(body, pubkey(ALICE), *sigs)
    with pytest.raises(BadNodeSignature):
        verify_channel_announcement(half)


@pytest.mark.parametrize("name, error", [
    ("node_signature_1", BadNodeSignature), ("node_signature_2", BadNodeSignature),
    ("bitcoin_signature_1", BadBitcoinSignature), ("bitcoin_signature_2", BadBitcoinSignature),
    ("chain_hash", BadNodeSignature), ("short_channel_id", BadNodeSignature),
    ("features", BadNodeSignature),
])
def test_flipped_announcement_field_fails_the_right_check(name, error):
    body = announce_from(ALICE, BOB)
    body[name] = flip(body[name])
    with pytest.raises(error):
        verify_channel_announcement(body)


@pytest.mark.parametrize("name", ["node_id_1", "node_id_2", "bitcoin_key_1", "bitcoin_key_2"])
def test_flipped_announcement_key_fails(name):
    body = announce_from(ALICE, BOB)
    body[name] = flip(body[name])  # either off the curve (malformed) or a wrong signer
    with pytest.raises((MalformedGossip, BadNodeSignature, BadBitcoinSignature)):
        verify_channel_announcement(body)


def test_announcement_requires_ordered_distinct_nodes():
    body = announce_from(ALICE, BOB)
    body["node_id_1"], body["node_id_2"] = body["node_id_2"], body["node_id_1"]
    with pytest.raises(MalformedGossip, match="less than"):
        verify_channel_announcement(body)
    with pytest.raises(MalformedGossip):
        channel_announcement_body(SCID, pubkey(ALICE), pubkey(ALICE), pubkey(funding(ALICE)),
                                  pubkey(funding(BOB)), CHAIN_HASH)


def test_complete_checks_the_signatures_and_the_slot():
    body = channel_announcement_body(SCID, pubkey(ALICE), pubkey(BOB), pubkey(funding(ALICE)),
                                     pubkey(funding(BOB)), CHAIN_HASH)
    node_sig, bitcoin_sig = announcement_signatures(body, BOB, funding(BOB))
    with pytest.raises(BadNodeSignature):
        complete_channel_announcement(body, pubkey(ALICE), node_sig, bitcoin_sig)
    with pytest.raises(BadBitcoinSignature):
        complete_channel_announcement(body, pubkey(BOB), node_sig, node_sig)
    with pytest.raises(MalformedGossip, match="not an end"):
        complete_channel_announcement(body, pubkey(CAROL), node_sig, bitcoin_sig)
    completed = complete_channel_announcement(body, pubkey(BOB), node_sig, bitcoin_sig)
    assert body["node_signature_1"] == body["node_signature_2"] == bytes(64)  # not mutated
    assert node_sig in (completed["node_signature_1"], completed["node_signature_2"])


def test_announcement_signatures_refuses_keys_not_in_the_body():
    body = channel_announcement_body(SCID, pubkey(ALICE), pubkey(BOB), pubkey(funding(ALICE)),
                                     pubkey(funding(BOB)), CHAIN_HASH)
    with pytest.raises(MalformedGossip):
        announcement_signatures(body, CAROL, funding(CAROL))
    with pytest.raises(MalformedGossip, match="funding key"):
        announcement_signatures(body, ALICE, funding(BOB))
    with pytest.raises(MalformedGossip, match="secret"):
        announcement_signatures(body, b"\x00" * 32, funding(ALICE))


# --- signing digest -------------------------------------------------------------------


def test_signing_digest_ignores_key_order_and_signatures_but_binds_the_type():
    body = update()
    reordered = dict(reversed(list(body.items())))
    assert signing_digest("channel_update", body) == signing_digest("channel_update", reordered)
    resigned = dict(body, signature=bytes(64))
    assert signing_digest("channel_update", resigned) == signing_digest("channel_update", body)
    # The same fields under another type name sign differently: no cross-type replay.
    assert signing_digest("node_announcement", body) != signing_digest("channel_update", body)


def test_signing_digest_refuses_unsigned_types():
    with pytest.raises(MalformedGossip):
        signing_digest("ping", {"num_pong_bytes": 1})
    with pytest.raises(MalformedGossip):
        signing_digest("channel_update", [1, 2])
    assert issubclass(GossipError, DecodeError)


# --- channel_update -------------------------------------------------------------------


def test_channel_update_verifies_and_carries_its_flags():
    body = update(BOB, direction=1, disabled=True)
    check_body("channel_update", body)
    verify_channel_update(body, pubkey(BOB))
    assert body["message_flags"] == 1
    assert update_direction(body) == 1 and update_disabled(body)
    enabled = update(ALICE)
    assert update_direction(enabled) == 0 and not update_disabled(enabled)
    with pytest.raises(BadUpdateSignature):
        verify_channel_update(body, pubkey(ALICE))


@pytest.mark.parametrize("changes", [
    {"direction": 2}, {"timestamp": 0}, {"htlc_minimum_msat": 10, "htlc_maximum_msat": 9},
    {"fee_base_msat": -1}, {"cltv_expiry_delta": 1 << 16}, {"chain_hash": b"short"},
])
def test_channel_update_refuses_bad_fields(changes):
    with pytest.raises(MalformedGossip):
        update(**changes)


def test_verify_channel_update_refuses_malformed_bodies():
    body = update()
    del body["htlc_maximum_msat"]
    with pytest.raises(MalformedGossip):
        verify_channel_update(body, pubkey(ALICE))


SIGNED_UPDATE = update()
_UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}


def _field_value(kind: str) -> st.SearchStrategy:
    if kind in _UINT_BITS:
        return st.integers(0, (1 << _UINT_BITS[kind]) - 1)
    return st.binary(min_size={"bytes32": 32, "sig": 64}[kind],
                     max_size={"bytes32": 32, "sig": 64}[kind])


@st.composite
def mutated_update(draw) -> dict:
    """The signed update with one field replaced by a random value of its kind."""
    spec = draw(st.sampled_from(SCHEMA["channel_update"]))
    body = dict(SIGNED_UPDATE)
    body[spec.name] = draw(st.one_of(st.just(flip(body[spec.name])), _field_value(spec.kind)))
    return body


@settings(max_examples=300, deadline=None)
@given(mutated_update())
def test_mutated_update_never_verifies_unless_unchanged(body):
    if body == SIGNED_UPDATE:
        verify_channel_update(body, pubkey(ALICE))
    else:
        with pytest.raises(BadUpdateSignature):
            verify_channel_update(body, pubkey(ALICE))


# --- node_announcement ----------------------------------------------------------------


def node_announcement(secret: bytes = ALICE, **changes) -> dict:
    """A signed node_announcement with defaults that ``changes`` override."""
    args = dict(timestamp=1_000, alias="alice", rgb_color=b"\x12\x34\x56",
                addresses=["tcp://127.0.0.1:9735"])
    args.update(changes)
    return make_node_announcement(secret, **args)


def test_node_announcement_verifies():
    body = node_announcement()
    check_body("node_announcement", body)
    assert body["node_id"] == pubkey(ALICE)
    verify_node_announcement(body)
    verify_node_announcement(node_announcement(alias="é" * 16, addresses=[]))  # 32 bytes


@pytest.mark.parametrize("name", ["signature", "timestamp", "node_id", "rgb_color", "features"])
def test_flipped_node_announcement_field_fails(name):
    body = node_announcement()
    body[name] = flip(body[name])
    with pytest.raises((BadNodeSignature, MalformedGossip)):
        verify_node_announcement(body)


@pytest.mark.parametrize("changes", [
    {"alias": "alicia"}, {"addresses": ["tcp://127.0.0.1:9736"]}, {"addresses": []},
])
def test_changed_node_announcement_content_fails(changes):
    body = dict(node_announcement(), **changes)
    with pytest.raises(BadNodeSignature):
        verify_node_announcement(body)


@pytest.mark.parametrize("changes", [
    {"alias": "é" * 17}, {"rgb_color": b"\x01\x02"}, {"addresses": [b"raw"]},
    {"alias": "\ud800"},
])
def test_node_announcement_refuses_bad_fields(changes):
    with pytest.raises(MalformedGossip):
        node_announcement(**changes)


# --- fees and names -------------------------------------------------------------------


@pytest.mark.parametrize("base, ppm, amount, expected", [
    (0, 0, 123_456, 0),
    (1_000, 0, 10**9, 1_000),
    (0, 1, 999_999, 0),  # the proportional part rounds down
    (0, 1, 1_000_000, 1),
    (1_000, 1, 1_999_999, 1_001),
    (200, 2_000, 4_999_999, 10_199),  # BOLT 7's routing example, B->C
    (0, 1_000_000, 7, 7),
    (0, 1, 2**62, 2**62 // 1_000_000),  # exact for big amounts, no floats
])
def test_fee_formula(base, ppm, amount, expected):
    assert fee_msat(base, ppm, amount) == expected


def test_short_channel_id_human_form():
    assert format_short_channel_id(539268 << 40 | 845 << 16 | 1) == "539268x845x1"
