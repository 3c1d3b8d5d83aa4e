"""The one wait helper: poll a condition with back-off until it holds or time runs out.

Tests and the runner never ``sleep`` for an outcome; they ``wait_for`` it. Timeouts
are multiplied by the ``LNEMU_TIMEOUT_SCALE`` environment variable (a float, default
1) so that a slow CI machine can stretch every wait at once.
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from typing import TypeVar

from emulator.errors import LnemuError

T = TypeVar("T")

TIMEOUT_SCALE_ENV = "LNEMU_TIMEOUT_SCALE"
MAX_INTERVAL = 0.25  # seconds; the back-off stops doubling here


class WaitTimeout(LnemuError):
    """A condition did not hold within its (scaled) timeout."""

    code = "timeout"


def timeout_scale() -> float:
    """The factor from ``LNEMU_TIMEOUT_SCALE`` (default 1); it must be a positive number."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise LnemuError(f"{TIMEOUT_SCALE_ENV} must be a positive number, got {raw!r}",
                         code="bad_config")
    return scale


class _Deadline:
    """One wait's deadline (scaled by ``LNEMU_TIMEOUT_SCALE``) and what it waits for."""

    def __init__(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        self.limit = timeout * timeout_scale()
        self.at = time.monotonic() + self.limit
        self.what = what or getattr(predicate, "__name__", repr(predicate))

    def left(self) -> float:
        """Seconds until the deadline; WaitTimeout, naming what, once it has passed."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"timed out after {self.limit:.2f} s waiting for {self.what}")
        return left


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "",
             interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    The pause between polls starts at ``interval`` and doubles up to 0.25 s. The
    timeout is scaled by ``LNEMU_TIMEOUT_SCALE``; the predicate is checked once more
    at the deadline, then :class:`WaitTimeout` names ``what`` and the timeout.
    Exceptions raised by the predicate propagate unchanged.
    """
    deadline = _Deadline(predicate, timeout, what)
    pause = max(interval, 0.0)
    while not (result := predicate()):
        time.sleep(min(pause, deadline.left()))
        pause = min(max(pause * 2, 0.001), MAX_INTERVAL)
    return result


async def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "",
                     interval: float = 0.01) -> T:
    """:func:`wait_for` inside an event loop: the pauses let the loop run meanwhile."""
    deadline = _Deadline(predicate, timeout, what)
    while not (result := predicate()):
        await asyncio.sleep(min(interval, deadline.left()))
    return result
