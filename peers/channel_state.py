"""Channel states and the one checked way to move between them.

Nothing writes a channel's state but :meth:`StateMachine.set_state`, which checks
the move against the table, persists, logs ``old -> new`` and emits an event.
"""
from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from emulator.errors import LnemuError


class ChannelState(IntEnum):
    """Where a channel is in its life."""

    OPENING = 0          # open_channel/accept_channel exchanged, not yet funded
    AWAITING_LOCKIN = 1  # funding signed and broadcast, waiting for min_depth
    OPEN = 2             # channel_ready both ways: payments flow
    SHUTDOWN = 3         # shutdown sent or received: no new HTLCs
    NEGOTIATING = 4      # closing_signed fee negotiation
    CLOSING = 5          # cooperative closing transaction broadcast
    FORCE_CLOSING = 6    # a commitment is on chain (ours or theirs): resolving outputs
    CLOSED = 7           # every output resolved
    ABORTED = 8          # the open failed before funding; nothing on chain


_ALLOWED: dict[ChannelState, set[ChannelState]] = {
    ChannelState.OPENING: {ChannelState.AWAITING_LOCKIN, ChannelState.ABORTED},
    ChannelState.AWAITING_LOCKIN: {ChannelState.OPEN, ChannelState.FORCE_CLOSING,
                                   ChannelState.SHUTDOWN, ChannelState.CLOSED},
    ChannelState.OPEN: {ChannelState.SHUTDOWN, ChannelState.FORCE_CLOSING},
    ChannelState.SHUTDOWN: {ChannelState.NEGOTIATING, ChannelState.FORCE_CLOSING},
    ChannelState.NEGOTIATING: {ChannelState.CLOSING, ChannelState.FORCE_CLOSING},
    ChannelState.CLOSING: {ChannelState.CLOSED, ChannelState.FORCE_CLOSING},
    ChannelState.FORCE_CLOSING: {ChannelState.CLOSED},
    ChannelState.CLOSED: set(),
    ChannelState.ABORTED: set(),
}


class IllegalTransition(LnemuError):
    code = "illegal_transition"


Observer = Callable[[ChannelState, ChannelState], None]


class StateMachine:
    """Holds one channel's state; ``observer`` persists, logs and emits the event."""

    def __init__(self, state: ChannelState = ChannelState.OPENING,
                 observer: Observer | None = None) -> None:
        self._state = state
        self.observer = observer

    @property
    def state(self) -> ChannelState:
        return self._state

    def can_move(self, new: ChannelState) -> bool:
        return new in _ALLOWED[self._state]

    def set_state(self, new: ChannelState) -> None:
        """Move to ``new`` if the table allows it; otherwise raise IllegalTransition."""
        old = self._state
        if new == old:
            return
        if new not in _ALLOWED[old]:
            raise IllegalTransition(f"channel cannot move from {old.name} to {new.name}")
        self._state = new
        if self.observer is not None:
            self.observer(old, new)

    @property
    def is_open(self) -> bool:
        return self._state == ChannelState.OPEN

    @property
    def is_active(self) -> bool:
        """The channel still has (or will have) balances off chain."""
        return self._state in (ChannelState.AWAITING_LOCKIN, ChannelState.OPEN,
                               ChannelState.SHUTDOWN, ChannelState.NEGOTIATING)
