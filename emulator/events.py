"""Events: timestamped facts every process reports to the runner's collector.

Sending never blocks: events go out on a PUSH socket with non-blocking sends and a
deep queue, so none is lost while the collector is up; with no collector configured
they go to the process's own log only. Inside an event loop, the events of up to
``BATCH_S`` leave together as one multipart message: one send, and one wake-up of the
collector, instead of one per turn of the loop (on a busy peer, hundreds a second
that each took a core from the processes doing the work). Each event keeps the time
it was emitted; a clean stop sends what is held.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import zmq

from emulator import barrier, envelope, sockio, transport

BATCH_S = 0.02  # events are held this long at most, then sent together


class EventEmitter:
    """Emits events for one process (named e.g. ``peer alice`` or ``chain``)."""

    def __init__(self, ctx: zmq.Context, endpoint: str | None, proc: str,
                 log: logging.Logger) -> None:
        self.proc = proc
        self.log = log
        self.sock = transport.pusher(ctx, endpoint) if endpoint else None
        self._out = sockio.plain(self.sock) if self.sock is not None else None  # no futures
        self.dropped = 0
        self._pending: list[bytes] = []

    def emit(self, kind: str, /, **data: Any) -> None:
        """Report one event; never blocks and never raises."""
        if self.sock is None:  # no collector: the log is the only record
            self.log.info("event %s %s", kind, _short(data))
            return
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("event %s %s", kind, _short(data))
        try:
            frame = envelope.pack_event(time.time(), self.proc, kind, data)
        except Exception as exc:  # an event must never take the process down
            self.log.warning("event %s not sent: %s", kind, exc)
            return
        if not self._pending:
            try:
                asyncio.get_running_loop().call_later(BATCH_S, self.flush)
            except RuntimeError:  # no event loop here (the runner's nemesis): send now
                self._pending.append(frame)
                self.flush()
                return
        self._pending.append(frame)

    def flush(self) -> None:
        """Send the events emitted since the last flush, as one message."""
        frames, self._pending = self._pending, []
        if not frames or self.sock is None:
            return
        try:
            barrier.before_send()
            self._out.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += len(frames)
            self.log.warning("%d events not sent: collector queue full", len(frames))
        except Exception as exc:  # an event must never take the process down
            self.log.warning("%d events not sent: %s", len(frames), exc)

    def close(self, linger_ms: int = 2000) -> None:
        """Close, giving queued events a bounded time to reach the collector."""
        if self.sock is not None:
            self.flush()
            self.sock.close(linger=linger_ms)


def _short(data: dict[str, Any]) -> str:
    plain = envelope.to_plain(data)
    text = " ".join(f"{k}={v}" for k, v in plain.items())
    return text if len(text) < 300 else text[:297] + "..."
