"""The write-ahead barrier: nothing leaves a process before what it depends on is durable.

A store that groups the writes of one event-loop turn into a single transaction (see
``peers.store``) registers its commit here; every place that sends on a socket (peer
links, control replies, RPC calls, events) calls :func:`before_send` first. So a message,
reply or event never reports a state that a crash could still take back, and the writes
made between two sends cost one commit instead of one each.
"""
from __future__ import annotations

from collections.abc import Callable

_flushes: list[Callable[[], None]] = []


def register(flush: Callable[[], None]) -> None:
    """Call ``flush`` before every send of this process (until unregistered)."""
    _flushes.append(flush)


def unregister(flush: Callable[[], None]) -> None:
    if flush in _flushes:
        _flushes.remove(flush)


def before_send() -> None:
    """Make every pending write durable; an error here stops the send that asked."""
    for flush in _flushes:
        flush()
