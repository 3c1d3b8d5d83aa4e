"""In-process crash points for crash-safety tests (like Core Lightning's dev-disconnect).

``LNEMU_CRASH_AT`` names one point, e.g. ``before_send:commitment_signed`` or
``after_recv:revoke_and_ack:2`` (the 2nd time). When the process reaches it, it
exits at once with status 137, exactly as a SIGKILL would leave it — no clean-up,
no flush beyond what was already committed to disk.

Writes are committed at the write-ahead barrier, just before a message leaves, and
messages leave together at the end of a loop turn; so a send point stands for that
moment: ``before_send`` passes the barrier (what the message depends on is on disk,
the message is not sent), ``after_send`` also flushes the queued messages first.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from functools import cache

from emulator import barrier

ENV = "LNEMU_CRASH_AT"
EXIT_CODE = 137
PHASES = ("before_send", "after_send", "before_recv", "after_recv")

_counts: Counter[str] = Counter()
_runtime: str | None = None
_senders: list[Callable[[], None]] = []  # flush queued messages (links)


def register_sender(flush: Callable[[], None]) -> None:
    """``flush`` sends what is queued; an ``after_send`` point calls it before exiting."""
    _senders.append(flush)


def set_target(spec: str | None) -> None:
    """Arm (or with None, disarm) a crash point at run time (the dev_crashat verb)."""
    global _runtime
    if spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in PHASES or (
                len(parts) == 3 and not parts[2].isdigit()):
            raise ValueError(f"crash point must be PHASE:MESSAGE[:N] with PHASE one of "
                             f"{', '.join(PHASES)}; got {spec!r}")
    _runtime = spec or None
    _counts.clear()


def _target() -> tuple[str, int] | None:
    spec = _runtime if _runtime is not None else _from_env()
    if not spec:
        return None
    return _parse(spec)


@cache
def _from_env() -> str:
    # read once, in the peer process (the fork server imports this module before the
    # peer's environment is set, but never reaches a point itself)
    return os.environ.get(ENV, "")


@cache
def _parse(spec: str) -> tuple[str, int]:
    parts = spec.split(":")
    nth = int(parts[2]) if len(parts) > 2 else 1
    return f"{parts[0]}:{parts[1]}", nth


def reach(phase: str, message_type: str) -> None:
    """Mark that ``phase`` of ``message_type`` happened; exit if it is the crash point."""
    target = _target()
    if target is None:
        return
    point = f"{phase}:{message_type}"
    if point != target[0]:
        return
    _counts[point] += 1
    if _counts[point] == target[1]:
        if phase == "before_send":
            barrier.before_send()
        elif phase == "after_send":
            for flush in _senders:
                flush()
        os._exit(EXIT_CODE)
