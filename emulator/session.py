"""The session layer: ordered, reliable links on top of ZeroMQ messages.

ZeroMQ delivers messages, not connections; Lightning assumes an ordered, reliable
link. A session gives each direction of a link an id and a sequence:

- ``init`` comes first and carries a fresh session id (the sender's);
- every later message carries that id and the next sequence number (1, 2, ...);
- a gap, a duplicate, a message out of order, a message before ``init`` or one from
  an old session ends the session (ZeroMQ may deliver messages queued for a
  process that has since restarted); a new ``init`` starts a new one.

This module is pure logic (no sockets): the node's link manager feeds it envelopes
and acts on its answers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from emulator.envelope import Envelope
from emulator.errors import LnemuError


class SessionError(LnemuError):
    """The link's session ended because of what arrived; ``reason`` says why."""

    code = "session_ended"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"session ended: {reason} ({detail})")
        self.reason = reason


def new_session_id() -> bytes:
    """A fresh random session id (16 bytes)."""
    return os.urandom(16)


@dataclass
class OutboundSession:
    """Our side of one direction: our session id and the next sequence to send."""

    session_id: bytes = field(default_factory=new_session_id)
    next_seq: int = 0  # ``init`` goes out with seq 0

    def stamp(self) -> tuple[bytes, int]:
        """Return (session id, seq) for the next message and advance the counter."""
        seq = self.next_seq
        self.next_seq += 1
        return self.session_id, seq


@dataclass
class InboundSession:
    """What we accept from the other side: its current session id and next seq."""

    session_id: bytes | None = None
    expected_seq: int = 0
    retired: list[bytes] = field(default_factory=list)  # recent ended sessions

    def accept(self, env: Envelope) -> bool:
        """Check ``env``; True when it starts a new session (an ``init``).

        Raises :class:`SessionError` when the message must end the session.
        """
        if env.type == "init":
            if env.seq != 0:
                raise SessionError("bad_init", f"init with seq {env.seq}, expected 0")
            if not env.session:
                raise SessionError("bad_init", "init without a session id")
            if env.session == self.session_id:
                raise SessionError("duplicate", "init repeated within its own session")
            if env.session in self.retired:
                raise SessionError("stale_session", "init of a session that already ended")
            self._retire()
            self.session_id, self.expected_seq = env.session, 1
            return True
        if self.session_id is None:
            raise SessionError("no_init", f"{env.type} before init")
        if env.session != self.session_id:
            raise SessionError("stale_session", f"{env.type} from session "
                               f"{env.session.hex()[:8]}, current {self.session_id.hex()[:8]}")
        if env.seq != self.expected_seq:
            kind = "duplicate" if env.seq < self.expected_seq else "gap"
            raise SessionError(kind, f"{env.type} seq {env.seq}, expected {self.expected_seq}")
        self.expected_seq += 1
        return False

    def reset(self) -> None:
        """End the session: only a fresh ``init`` is accepted after this."""
        self._retire()
        self.session_id, self.expected_seq = None, 0

    def _retire(self) -> None:
        if self.session_id is not None:
            self.retired = [*self.retired[-63:], self.session_id]
