"""The session layer: init first, sequence numbers, stale sessions end the link."""
from __future__ import annotations

import pytest

from emulator.envelope import Envelope
from emulator.session import InboundSession, OutboundSession, SessionError


def msg(type_name: str, session: bytes, seq: int) -> Envelope:
    return Envelope(type_name, {}, b"peer", session, seq)


def started(session: bytes = b"A" * 16) -> InboundSession:
    inbound = InboundSession()
    assert inbound.accept(msg("init", session, 0)) is True
    return inbound


def test_in_order_messages_are_accepted():
    inbound = started()
    for seq in range(1, 50):
        assert inbound.accept(msg("ping", b"A" * 16, seq)) is False


def test_outbound_stamps_consecutive_numbers():
    out = OutboundSession()
    stamps = [out.stamp() for _ in range(3)]
    assert [s for _, s in stamps] == [0, 1, 2]
    assert len({sid for sid, _ in stamps}) == 1 and len(stamps[0][0]) == 16


@pytest.mark.parametrize("session,seq,reason", [
    (b"A" * 16, 3, "gap"),
    (b"A" * 16, 1, "duplicate"),
    (b"B" * 16, 2, "stale_session"),
])
def test_violations_end_the_session(session, seq, reason):
    inbound = started()
    inbound.accept(msg("ping", b"A" * 16, 1))
    with pytest.raises(SessionError) as info:
        inbound.accept(msg("ping", session, seq))
    assert info.value.reason == reason


def test_message_before_init_is_refused():
    with pytest.raises(SessionError) as info:
        InboundSession().accept(msg("ping", b"A" * 16, 1))
    assert info.value.reason == "no_init"


def test_init_must_have_seq_zero_and_an_id():
    with pytest.raises(SessionError):
        InboundSession().accept(msg("init", b"A" * 16, 1))
    with pytest.raises(SessionError):
        InboundSession().accept(msg("init", b"", 0))


def test_new_init_replaces_the_session_and_old_one_is_stale():
    inbound = started(b"A" * 16)
    assert inbound.accept(msg("init", b"B" * 16, 0)) is True
    with pytest.raises(SessionError) as info:
        inbound.accept(msg("ping", b"A" * 16, 1))
    assert info.value.reason == "stale_session"


def test_a_replayed_init_of_an_ended_session_is_stale():
    inbound = started(b"A" * 16)
    inbound.reset()
    with pytest.raises(SessionError) as info:
        inbound.accept(msg("init", b"A" * 16, 0))
    assert info.value.reason == "stale_session"
    assert inbound.accept(msg("init", b"C" * 16, 0)) is True
