"""SocketIO: one reader task per socket, messages handled in order, sends made directly.

Each test runs its own event loop (``asyncio.run``) over a real ROUTER/DEALER pair:
SocketIO reads the ROUTER, the test plays the DEALER. ``ipc://`` endpoints live in a
short directory under /tmp; ``inproc://`` is used where a test needs a message to be
queued at the ROUTER the moment the DEALER's send returns. No test sleeps for an
outcome: it awaits it with a timeout scaled by ``LNEMU_TIMEOUT_SCALE``.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from emulator import transport
from emulator.sockio import FAIRNESS, SocketIO, plain
from emulator.waiting import timeout_scale

T = TypeVar("T")

PEER = b"peer"  # the DEALER's identity: the first frame of every message the ROUTER reads
TIMEOUT = 5.0  # seconds, scaled


@pytest.fixture
def endpoint() -> Iterator[str]:
    """An ipc endpoint in a fresh short directory under /tmp (removed afterwards)."""
    sock_dir = transport.short_socket_dir("lnemu-sockio-")
    try:
        yield transport.ipc_endpoint(sock_dir, "router")
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def router_and_dealer(
        endpoint: str) -> AsyncIterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
    """A bound ROUTER and a DEALER connected to it (both zmq.asyncio sockets, set up as
    ``emulator.transport`` does, which accepts no ``inproc://``)."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    sockets = [router, dealer]
    try:
        for sock in sockets:
            sock.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to an unknown peer raises
        router.bind(endpoint)
        dealer.setsockopt(zmq.IDENTITY, PEER)
        dealer.connect(endpoint)
        yield router, dealer
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()


async def within(awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable``, failing the test (naming ``what``) after the scaled timeout."""
    try:
        return await asyncio.wait_for(awaitable, TIMEOUT * timeout_scale())
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class Recorder:
    """A handler that keeps the payload (last frame) of every message it is given."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._grew = asyncio.Event()

    async def __call__(self, frames: list[bytes]) -> None:
        self.payloads.append(frames[-1])
        self._grew.set()

    async def until(self, count: int) -> None:
        """Wait until ``count`` messages have been handled."""
        async def grown() -> None:
            while len(self.payloads) < count:
                self._grew.clear()
                await self._grew.wait()
        await within(grown(), f"{count} handled messages (got {len(self.payloads)})")


def numbered(count: int) -> list[bytes]:
    return [b"%d" % i for i in range(count)]


def test_many_messages_all_arrive_in_order(endpoint):
    """500 messages from the peer are each handled once, in the order they were sent."""
    async def scenario() -> list[bytes]:
        async with router_and_dealer(endpoint) as (router, dealer):
            handled = Recorder()
            io = SocketIO(router, handled)
            try:
                for i, payload in enumerate(numbered(500)):
                    await dealer.send(payload)
                    if i % 50 == 0:
                        await asyncio.sleep(0)  # let the reader drain and wait again
                await handled.until(500)
            finally:
                io.close()
            return handled.payloads

    assert asyncio.run(scenario()) == numbered(500)


def test_replying_while_the_peer_keeps_sending_does_not_stall(endpoint):
    """A handler that replies on the same socket to every message, while the peer keeps
    sending, still gets every message and the peer every reply."""
    count = 300

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        async with router_and_dealer(endpoint) as (router, dealer):
            handled = Recorder()

            async def handle_and_reply(frames: list[bytes]) -> None:
                await handled(frames)
                io.send_multipart([frames[0], b"ack " + frames[1]])

            async def send_all() -> None:
                for payload in numbered(count):
                    await dealer.send(payload)
                    await asyncio.sleep(0)  # the replies go out in between

            io = SocketIO(router, handle_and_reply)
            try:
                sender = asyncio.create_task(send_all())
                acks = await within(asyncio.gather(*[dealer.recv() for _ in range(count)]),
                                    f"{count} replies")
                await within(sender, "the peer to finish sending")
                await handled.until(count)
            finally:
                io.close()
            return handled.payloads, acks

    payloads, acks = asyncio.run(scenario())
    assert payloads == numbered(count)
    assert acks == [b"ack " + payload for payload in numbered(count)]


def test_a_send_while_the_reader_waits_does_not_swallow_its_wake_up():
    """A message whose arrival signal a send consumes (ZeroMQ's descriptor is
    edge-triggered) is still handled: the send re-checks the socket's events."""
    async def scenario() -> list[bytes]:
        async with router_and_dealer("inproc://sockio-edge") as (router, dealer):
            handled = Recorder()
            io = SocketIO(router, handled)
            try:
                plain(dealer).send(b"hello")
                await handled.until(1)  # the reader has drained the socket and waits
                # Past libzmq's command throttle (~1 ms), so that the send below
                # processes the socket's pending commands, the new message's among them.
                await asyncio.sleep(0.01)
                plain(dealer).send(b"second")  # inproc: queued and signalled at once
                io.send_multipart([PEER, b"reply"])  # consumes that signal
                await handled.until(2)
            finally:
                io.close()
            return handled.payloads

    assert asyncio.run(scenario()) == [b"hello", b"second"]


def test_a_handler_that_raises_does_not_stop_the_reading(endpoint):
    """A handler error on one message is reported to the loop; the later ones are handled."""
    async def scenario() -> tuple[list[bytes], list[dict[str, Any]]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context))
        async with router_and_dealer(endpoint) as (router, dealer):
            handled = Recorder()

            async def handle(frames: list[bytes]) -> None:
                await handled(frames)
                if frames[-1] == b"bad":
                    raise ValueError("a bad message")

            io = SocketIO(router, handle)
            try:
                for payload in (b"ok 0", b"bad", b"ok 1", b"ok 2"):
                    await dealer.send(payload)
                await handled.until(4)
            finally:
                io.close()
            return handled.payloads, reported

    payloads, reported = asyncio.run(scenario())
    assert payloads == [b"ok 0", b"bad", b"ok 1", b"ok 2"]
    assert [type(context.get("exception")) for context in reported] == [ValueError]


def test_close_stops_the_handler_and_ends_the_reader():
    """After close() the reader task ends, its descriptor leaves the loop, later messages
    stay on the socket unhandled, and the socket then closes cleanly."""
    async def scenario() -> None:
        async with router_and_dealer("inproc://sockio-close") as (router, dealer):
            handled = Recorder()
            io = SocketIO(router, handled)
            plain(dealer).send(b"before")
            await handled.until(1)
            io.close()
            for payload in (b"after 1", b"after 2"):
                plain(dealer).send(payload)  # inproc: queued and signalled at once
            await within(asyncio.wait({io.task}), "the reader task to end")
            await asyncio.sleep(0)  # one more turn for anything still listening
            assert io.task.cancelled()
            assert handled.payloads == [b"before"]
            fd = plain(router).getsockopt(zmq.FD)
            assert not asyncio.get_running_loop().remove_reader(fd)  # already removed
            left = [plain(router).recv_multipart(zmq.NOBLOCK)[1] for _ in range(2)]
            assert left == [b"after 1", b"after 2"]  # nobody read them
            router.close(linger=0)
            assert router.closed

    asyncio.run(scenario())


def test_close_from_inside_the_handler_stops_before_the_next_message():
    """A handler that closes its SocketIO is not called again for a message already queued."""
    async def scenario() -> list[bytes]:
        async with router_and_dealer("inproc://sockio-close-inside") as (router, dealer):
            for payload in (b"first", b"second"):
                plain(dealer).send(payload)  # both queued before reading starts
            handled = Recorder()

            async def handle_and_close(frames: list[bytes]) -> None:
                await handled(frames)
                io.close()

            io = SocketIO(router, handle_and_close)
            await within(asyncio.wait({io.task}), "the reader task to end")
            return handled.payloads

    assert asyncio.run(scenario()) == [b"first"]


def test_a_long_queue_lets_other_tasks_run_in_between():
    """With more than FAIRNESS messages queued, a task created before the reading starts
    runs after at most FAIRNESS of them, not after all of them."""
    count = 3 * FAIRNESS

    async def scenario() -> list[bool]:
        async with router_and_dealer("inproc://sockio-fair") as (router, dealer):
            for payload in numbered(count):
                plain(dealer).send(payload)  # inproc: all queued before reading starts
            other_ran = False
            seen: list[bool] = []  # per handled message: had the other task run yet?
            handled = Recorder()

            async def other() -> None:
                nonlocal other_ran
                other_ran = True

            async def handle(frames: list[bytes]) -> None:
                seen.append(other_ran)
                await handled(frames)

            io = SocketIO(router, handle)
            other_task = asyncio.create_task(other())
            try:
                await handled.until(count)
                await within(other_task, "the other task")
            finally:
                io.close()
            return seen

    seen = asyncio.run(scenario())
    assert True in seen[:FAIRNESS + 1], "the other task waited for the whole queue"
