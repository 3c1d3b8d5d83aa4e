"""Events: timestamped facts every process reports to the runner's collector.

Sending never blocks: events go out on a PUSH socket with non-blocking sends and a
deep queue, so none is lost while the collector is up; with no collector configured
they go to the process's own log only.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from emulator import envelope, transport


class EventEmitter:
    """Emits events for one process (named e.g. ``peer alice`` or ``chain``)."""

    def __init__(self, ctx: zmq.Context, endpoint: str | None, proc: str,
                 log: logging.Logger) -> None:
        self.proc = proc
        self.log = log
        self.sock = transport.pusher(ctx, endpoint) if endpoint else None
        self.dropped = 0

    def emit(self, kind: str, /, **data: Any) -> None:
        """Report one event; never blocks and never raises."""
        self.log.info("event %s %s", kind, _short(data))
        if self.sock is None:
            return
        try:
            self.sock.send(envelope.pack_event(time.time(), self.proc, kind, data),
                           flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            self.log.warning("event %s not sent: collector queue full", kind)
        except Exception as exc:  # an event must never take the process down
            self.log.warning("event %s not sent: %s", kind, exc)

    def close(self, linger_ms: int = 2000) -> None:
        """Close, giving queued events a bounded time to reach the collector."""
        if self.sock is not None:
            self.sock.close(linger=linger_ms)


def _short(data: dict[str, Any]) -> str:
    plain = envelope.to_plain(data)
    text = " ".join(f"{k}={v}" for k, v in plain.items())
    return text if len(text) < 300 else text[:297] + "..."
