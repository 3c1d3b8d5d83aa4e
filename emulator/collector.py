"""The event collector: the PULL end of the events socket, writing ``events.jsonl``.

Every process PUSHes its events (a batch per turn of its event loop, as one multipart
message); the collector runs in a thread of the supervisor's process with its own
ZeroMQ context, appends each event as a JSON line and keeps the recent ones in
memory for checks.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
from pathlib import Path
from typing import Any

import zmq

from emulator import envelope, transport
from emulator.errors import LnemuError

log = logging.getLogger("supervisor")

EVENTS_FILE = "events.jsonl"


class EventCollector:
    """The PULL end of the events socket: appends every event to ``events.jsonl``.

    It runs in a background thread with its own ZeroMQ context, blocks in a poll
    (waking every 100 ms to notice ``stop()``), keeps the last ``keep`` events in
    memory for :meth:`events`, and drops (and counts) malformed messages.
    """

    POLL_MS = 100
    BATCH = 1000  # messages written between flushes while busy

    def __init__(self, endpoint: str, path: Path, keep: int = 10_000) -> None:
        self.endpoint = endpoint
        self.path = Path(path)
        self.count = 0  # events written
        self.malformed = 0  # messages dropped
        self.error: BaseException | None = None
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-collector",
                                        daemon=True)

    def start(self) -> None:
        """Bind the socket in the collector thread; return once it is listening."""
        self._thread.start()
        self._bound.wait()
        if self.error is not None:
            self._thread.join()
            raise LnemuError(f"event collector could not start on {self.endpoint}: "
                             f"{self.error}", code="collector_failed") from self.error

    def stop(self) -> None:
        """Write what is already queued, close the socket; raise if the thread failed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is not None:
            raise LnemuError(f"event collector failed: {self.error!r}",
                             code="collector_failed") from self.error

    def events(self, kind: str | None = None, proc: str | None = None) -> list[dict[str, Any]]:
        """The recent events (oldest first), optionally only of one kind or process."""
        with self._lock:
            recent = list(self._recent)
        return [e for e in recent
                if (kind is None or e["kind"] == kind) and (proc is None or e["proc"] == proc)]

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = None
        try:
            sock = transport.puller(ctx, self.endpoint)
            self._bound.set()
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            with open(self.path, "a", encoding="utf-8") as out:
                while not self._stop.is_set():
                    if poller.poll(self.POLL_MS):
                        self._write_batch(sock, out, self.BATCH)
                while poller.poll(0):  # stopping: drain what is already queued
                    self._write_batch(sock, out, self.BATCH)
        except BaseException as exc:  # handed to start() and stop()
            self.error = exc
            log.error("event collector failed: %r", exc)
        finally:
            self._bound.set()
            if sock is not None:
                sock.close(linger=0)
            ctx.destroy(linger=0)  # also closes a socket whose bind failed inside puller()

    def _write_batch(self, sock: zmq.Socket, out: Any, limit: int) -> None:
        lines = []
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)  # a process's events, batched
            except zmq.Again:
                break
            for data in frames:
                decoded = self._decode(data)
                if decoded is not None:
                    event, line = decoded
                    lines.append(line)
                    with self._lock:
                        self._recent.append(event)
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
            self.count += len(lines)

    def _decode(self, data: bytes) -> tuple[dict[str, Any], str] | None:
        """The event and its JSON line, or None (counted) if it is malformed."""
        try:
            env = envelope.unpack(data, max_bytes=envelope.CONTROL_MAX_BYTES)
            if env.type != "event":
                raise envelope.UnknownMessageType(f"expected an event, got {env.type!r}")
            body = env.body
            event = {"ts": body["ts"], "proc": body["proc"], "kind": body["kind"],
                     "data": envelope.to_plain(body["data"])}
            return event, json.dumps(event)  # what JSON cannot hold is rejected here
        except (envelope.EnvelopeError, TypeError, ValueError) as exc:
            self.malformed += 1
            if self.malformed <= 10:
                log.warning("event collector: dropped a malformed message (%s)", exc)
            return None
