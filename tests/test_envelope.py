"""The envelope: round trips, every rejection, and arbitrary bytes never crash it."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import envelope
from emulator.envelope import (
    EnvelopeError,
    MalformedMessage,
    OversizedMessage,
    SchemaViolation,
    UnknownMessageType,
)

NODE = b"\x02" + b"\x11" * 32


def test_round_trip_keeps_bytes_and_fields():
    data = envelope.pack("ping", {"num_pong_bytes": 4, "ignored": b"\x00\xff"},
                         sender=NODE, session=b"s" * 16, seq=7)
    env = envelope.unpack(data)
    assert (env.type, env.sender, env.session, env.seq) == ("ping", NODE, b"s" * 16, 7)
    assert env.body == {"num_pong_bytes": 4, "ignored": b"\x00\xff"}
    assert isinstance(env.body["ignored"], bytes)


def test_control_request_and_reply_round_trip():
    req = envelope.unpack_control(envelope.pack_request("getinfo", {"x": 1}, 5), "request")
    assert req == {"op": "getinfo", "args": {"x": 1}, "rid": 5}
    ok = envelope.unpack_control(envelope.pack_reply(5, {"height": 3}), "reply")
    assert ok == {"rid": 5, "ok": True, "result": {"height": 3}}
    err = envelope.unpack_control(
        envelope.pack_reply(6, error={"code": "bad_request", "message": "no"}), "reply")
    assert err["ok"] is False and err["error"]["code"] == "bad_request"


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


GOOD = {"type": "pong", "from": NODE, "session": b"", "seq": 0, "body": {"ignored": b""}}


@pytest.mark.parametrize("data,error", [
    (b"\xc1", MalformedMessage),                       # reserved msgpack byte
    (b"\x92\x01", MalformedMessage),                   # truncated array
    (_raw([1, 2]), MalformedMessage),                  # not a map
    (_raw({**GOOD, "type": 5}), MalformedMessage),
    (_raw({**GOOD, "seq": -1}), MalformedMessage),
    (_raw({**GOOD, "session": b"x" * 33}), MalformedMessage),
    (_raw({**GOOD, "extra": 1}), MalformedMessage),
    (_raw({**GOOD, "from": 3}), MalformedMessage),
    (_raw({**GOOD, "type": "no_such_message"}), UnknownMessageType),
    (_raw({**GOOD, "body": {}}), SchemaViolation),     # missing field
    (_raw({**GOOD, "body": {"ignored": "text"}}), SchemaViolation),  # wrong kind
    (_raw({**GOOD, "body": {"ignored": b"", "zzz": 1}}), SchemaViolation),  # unknown field
    (_raw({**GOOD, "body": [1]}), SchemaViolation),
    (_raw({1: 2}), MalformedMessage),                  # int map key (strict map keys)
    (_raw({**GOOD, "type": "ping", "body": {"num_pong_bytes": 70000}}), SchemaViolation),
    (_raw({**GOOD, "type": "revoke_and_ack", "body": {
        "channel_id": b"c" * 32, "per_commitment_secret": b"s" * 31,
        "next_per_commitment_point": NODE}}), SchemaViolation),  # short bytes32
])
def test_rejections_are_typed(data, error):
    with pytest.raises(error):
        envelope.unpack(data)


def test_oversized_message_is_rejected_before_parsing():
    with pytest.raises(OversizedMessage):
        envelope.unpack(b"\x00" * (envelope.P2P_MAX_BYTES + 1))


def test_pack_checks_the_schema_too():
    with pytest.raises(SchemaViolation):
        envelope.pack("pong", {"ignored": 5})
    with pytest.raises(UnknownMessageType):
        envelope.pack("nope", {})


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_the_typed_error(data):
    try:
        envelope.unpack(data)
    except EnvelopeError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "from", "session", "seq", "body", "x"]),
                       json_like, max_size=6))
def test_arbitrary_structures_raise_only_the_typed_error(obj):
    try:
        envelope.unpack(msgpack.packb(obj, use_bin_type=True))
    except EnvelopeError:
        pass
