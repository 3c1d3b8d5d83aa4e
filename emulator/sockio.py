"""Socket I/O on the event loop without a future per message.

pyzmq's asyncio sockets make a future, a callback and a poller update for every send
and receive; on a peer's links, where each payment is a dozen messages, that was a
fifth of the CPU. :class:`SocketIO` reads and writes a plain (shadow) socket instead:
sends are direct non-blocking calls, and one reader task drains every queued message
each time the socket's file descriptor wakes the loop.

ZeroMQ's descriptor is edge-triggered and any operation on the socket may consume the
edge, so the socket's ``EVENTS`` are read again after every send and before every
wait; the loop never sleeps with a message queued, and never spins when there is none.

A sent message leaves through ZeroMQ's I/O thread, which the send wakes. The scheduler
tends to queue that thread on the sender's core, behind the sender itself, so whatever
the process does next (checking a commitment, deriving the next keys) delayed the
message by as long: :func:`hand_over` yields the core to it once after a batch is sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio

Handler = Callable[[list[bytes]], Awaitable[None]]
FAIRNESS = 32  # messages handled in a row before other tasks get a turn


def hand_over() -> None:
    """After sending a batch: let the I/O thread that carries it run before we go on (one
    ``sched_yield``, which returns at once when nothing else waits for the core)."""
    os.sched_yield()


def plain(sock: zmq.Socket) -> zmq.Socket:
    """The plain, blocking-API view of ``sock`` (the same ZeroMQ socket)."""
    if isinstance(sock, zmq.asyncio.Socket):
        return zmq.Socket.shadow(sock.underlying)
    return sock


class SocketIO:
    """Reads one socket in a task (messages handled one after another, in order) and
    sends on it directly. ``close()`` stops reading at once; the caller closes the socket."""

    def __init__(self, sock: zmq.Socket, handle: Handler) -> None:
        self.owner = sock  # keeps the socket object (and so its descriptor) alive
        self.sock = plain(sock)
        self.handle = handle
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._fd = self.sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._check)
        self.task = asyncio.create_task(self._run())
        self.closed = False

    def _check(self) -> None:
        """Reading EVENTS processes ZeroMQ's pending commands (which clears the edge)."""
        try:
            if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self._wake.set()
        except zmq.ZMQError:
            pass  # closed under us: close() follows

    def send(self, data: bytes, flags: int = zmq.NOBLOCK) -> None:
        """Send one frame now (raises zmq.ZMQError as the socket would)."""
        try:
            self.sock.send(data, flags=flags)
        finally:
            self._check()

    def send_multipart(self, frames: list[bytes], flags: int = zmq.NOBLOCK) -> None:
        try:
            self.sock.send_multipart(frames, flags=flags)
        finally:
            self._check()

    async def _run(self) -> None:
        handled = 0
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self._wake.clear()
                if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    continue
                await self._wake.wait()
                handled = 0
                continue
            except zmq.ZMQError:
                return  # the socket was closed
            try:
                await self.handle(frames)
            except Exception as exc:  # one bad message must not stop the reading
                self._loop.call_exception_handler({
                    "message": "socket reader: handling a message failed", "exception": exc})
            if self.closed:  # closed by the handler itself: not one message more
                return
            handled += 1
            if handled >= FAIRNESS:
                handled = 0
                await asyncio.sleep(0)

    def close(self) -> None:
        """Stop reading now: the descriptor leaves the loop before the socket is closed
        (a new socket may get the same descriptor number)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
        self.task.cancel()
