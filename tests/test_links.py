"""LinkManager's outbox: what one loop turn sends leaves together, in order, once.

Each test runs its own event loop (``asyncio.run``) with two or three real
LinkManagers (alice, bob, carol) on one ``zmq.asyncio.Context``, talking over
``ipc://`` endpoints in a short directory under /tmp. alice dials the others, so her
links are DEALERs and theirs are the inbound side of their ROUTERs. Pings are pushed
out of the way (a long ping interval) so that only the tests' own messages travel.
No test sleeps for an outcome: it polls for it with a timeout scaled by
``LNEMU_TIMEOUT_SCALE``.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from emulator import barrier, envelope, transport
from emulator.envelope import Envelope
from emulator.events import EventEmitter
from emulator.session import OutboundSession
from emulator.waiting import timeout_scale, wait_until
from peers.config import Timers
from peers.links import SMALL_BATCH, LinkManager

TIMEOUT = 5.0  # seconds, scaled
POLL_INTERVAL = 0.01
# the test profile, without pings: only the tests' own messages cross the links
TIMERS = dataclasses.replace(Timers.profile("test"), ping_interval=600.0)
CHANNEL_ID = b"\x00" * 32

Received = tuple[bytes, str, dict[str, Any]]  # (sender node id, message type, body)
Reaction = Callable[[bytes, Envelope], Awaitable[None]]


def node_id_of(number: int) -> bytes:
    """A 33-byte node id (a compressed-pubkey shape) for test peer ``number``."""
    return b"\x02" + bytes([number]) * 32


def warning(text: str) -> dict[str, Any]:
    """The body of a ``warning``: a real message type whose ``data`` numbers it."""
    return {"channel_id": CHANNEL_ID, "data": text}


def fulfill(htlc_id: int) -> dict[str, Any]:
    """The body of an ``update_fulfill_htlc`` (an urgent message)."""
    return {"channel_id": CHANNEL_ID, "id": htlc_id, "payment_preimage": b"\x11" * 32}


class RecordingEmitter(EventEmitter):
    """An emitter with no collector that also keeps the kinds of the events emitted."""

    def __init__(self, ctx: zmq.Context, proc: str, log: logging.Logger) -> None:
        super().__init__(ctx, None, proc, log)
        self.kinds: list[str] = []

    def emit(self, kind: str, /, **data: Any) -> None:
        self.kinds.append(kind)
        super().emit(kind, **data)


@dataclass
class Peer:
    """One LinkManager and what its handler was given."""

    name: str
    node_id: bytes
    endpoint: str
    events: RecordingEmitter
    links: LinkManager = field(init=False, repr=False)  # built once handle() exists
    received: list[Received] = field(default_factory=list)
    react: Reaction | None = None  # called after recording each handled message

    async def handle(self, sender: bytes, env: Envelope) -> None:
        self.received.append((sender, env.type, env.body))
        if self.react is not None:
            await self.react(sender, env)

    def warnings_from(self, sender: Peer) -> list[str]:
        """The ``data`` of every warning handled from ``sender``, in order."""
        return [body["data"] for node_id, kind, body in self.received
                if node_id == sender.node_id and kind == "warning"]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A fresh short directory under /tmp for the ipc socket files (removed afterwards)."""
    path = transport.short_socket_dir("lnemu-links-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def make_peers(sock_dir: Path, *names: str) -> AsyncIterator[list[Peer]]:
    """LinkManagers named ``names`` (not started); all closed, with the context, at exit."""
    ctx = zmq.asyncio.Context()
    peers: list[Peer] = []
    try:
        for number, name in enumerate(names, start=1):
            log = logging.getLogger(f"lnemu.test_links.{name}")
            events = RecordingEmitter(ctx, f"peer {name}", log)
            endpoint = transport.ipc_endpoint(sock_dir, name)
            node_id = node_id_of(number)
            peer = Peer(name, node_id, endpoint, events)
            peer.links = LinkManager(ctx, node_id, endpoint, TIMERS, events, log,
                                     peer.handle, alias=name)
            peers.append(peer)
        yield peers
    finally:
        for peer in peers:
            tasks = list(peer.links._tasks)
            await peer.links.close()
            if tasks:  # let the cancelled tasks close their monitor sockets
                await asyncio.wait(tasks, timeout=TIMEOUT * timeout_scale())
        ctx.destroy(linger=0)


async def until(predicate: Callable[[], object], what: str) -> None:
    """Wait until ``predicate`` holds (WaitTimeout, naming ``what``, at the timeout)."""
    await wait_until(predicate, TIMEOUT, what=what, interval=POLL_INTERVAL)


async def start_and_connect(dialer: Peer, *listeners: Peer) -> None:
    """Start every manager, let ``dialer`` connect to each listener, wait for both ends."""
    for peer in (dialer, *listeners):
        await peer.links.start()
    for peer in listeners:
        await dialer.links.connect(peer.node_id, peer.endpoint)
    for peer in listeners:
        await until(lambda peer=peer: dialer.links.is_connected(peer.node_id)
                    and peer.links.is_connected(dialer.node_id),
                    f"{dialer.name} and {peer.name} to be connected")


def message_types(frames: list[bytes]) -> list[str]:
    """The types of the lnemu messages in one ZeroMQ message's frames."""
    return [envelope.unpack(frame).type for frame in frames]


def record_sends(peer: Peer, other: Peer, journal: list[Any]) -> None:
    """Journal every ZeroMQ message ``peer``'s outbound link sends to ``other``, as
    ``("send", other.name, [types...])``, then send it."""
    io = peer.links.links[other.node_id].io
    assert io is not None, f"{peer.name} has no socket to {other.name}"
    original = io.send_multipart

    def send_multipart(frames: list[bytes], flags: int = zmq.NOBLOCK) -> None:
        journal.append(("send", other.name, message_types(frames)))
        original(frames, flags)

    io.send_multipart = send_multipart  # type: ignore[method-assign]


def test_one_turn_of_messages_arrives_in_order_as_one_zmq_message(sock_dir):
    """Messages alice sends in one loop turn reach bob in order, in one ZeroMQ message."""
    count = 5

    async def scenario() -> tuple[list[str], list[list[str]]]:
        async with make_peers(sock_dir, "alice", "bob") as (alice, bob):
            batches: list[list[str]] = []  # per ZeroMQ message bob read: its lnemu types
            original = bob.links._on_router_message

            async def on_router_message(frames: list[bytes]) -> None:
                batches.append(message_types(frames[1:]))  # frames[0]: alice's identity
                await original(frames)

            bob.links._on_router_message = on_router_message  # read from start() on
            await start_and_connect(alice, bob)
            for i in range(count):  # no await here suspends: one loop turn
                await alice.links.send(bob.node_id, "warning", warning(f"m{i}"))
            await until(lambda: len(bob.warnings_from(alice)) == count,
                        f"bob to handle {count} warnings")
            return bob.warnings_from(alice), [b for b in batches if "warning" in b]

    handled, batches = asyncio.run(scenario())
    assert handled == [f"m{i}" for i in range(count)]
    assert batches == [["warning"] * count]


def test_the_barrier_runs_once_per_flush_before_anything_is_sent(sock_dir):
    """One flush of two links' queues passes the write-ahead barrier once, before sending."""
    async def scenario() -> tuple[list[str], list[list[Any]]]:
        async with make_peers(sock_dir, "alice", "bob", "carol") as (alice, bob, carol):
            await start_and_connect(alice, bob, carol)
            journal: list[Any] = []
            flushes: list[list[Any]] = []  # per flush of alice's outbox: what it did
            record_sends(alice, bob, journal)
            record_sends(alice, carol, journal)
            original_flush = alice.links.flush

            def flush() -> None:
                start = len(journal)
                original_flush()
                flushes.append(journal[start:])

            def count_barrier() -> None:
                journal.append("barrier")

            alice.links.flush = flush  # type: ignore[method-assign]
            barrier.register(count_barrier)
            try:
                for to, text in ((bob, "b0"), (carol, "c0"), (bob, "b1"), (carol, "c1"),
                                 (bob, "b2")):
                    await alice.links.send(to.node_id, "warning", warning(text))
                during_sends = list(journal)
                await until(lambda: len(bob.warnings_from(alice)) == 3
                            and len(carol.warnings_from(alice)) == 2,
                            "bob and carol to handle alice's warnings")
            finally:
                barrier.unregister(count_barrier)
            return during_sends, [done for done in flushes if done]

    during_sends, flushes = asyncio.run(scenario())
    assert during_sends == []  # queueing neither commits nor sends
    assert flushes == [["barrier",
                        ("send", "bob", ["warning"] * 3),
                        ("send", "carol", ["warning"] * 2)]]


def test_a_queue_whose_session_was_replaced_before_the_flush_is_dropped(sock_dir):
    """Messages queued in a link session that a redial replaced are not sent."""
    async def scenario() -> tuple[list[Any], list[str], list[str], int]:
        async with make_peers(sock_dir, "alice", "bob", "carol") as (alice, bob, carol):
            await start_and_connect(alice, bob, carol)
            journal: list[Any] = []
            record_sends(alice, bob, journal)
            record_sends(alice, carol, journal)
            await alice.links.send(bob.node_id, "warning", warning("stale"))
            await alice.links.send(carol.node_id, "warning", warning("fresh"))
            # as _dial does: the link's session starts over before the queue leaves
            alice.links.links[bob.node_id].outbound = OutboundSession()
            alice.links.flush()
            await until(lambda: carol.warnings_from(alice), "carol to handle her warning")
            return (journal, bob.warnings_from(alice), carol.warnings_from(alice),
                    len(alice.links._outbox))

    journal, to_bob, to_carol, still_queued = asyncio.run(scenario())
    assert journal == [("send", "carol", ["warning"])]  # nothing at all went to bob
    assert to_bob == []
    assert to_carol == ["fresh"]
    assert still_queued == 0


def test_messages_queued_before_a_link_fault_go_first_and_all_arrive_in_order(sock_dir):
    """Messages queued before a delay fault and sent through it arrive in order, in one session."""
    async def scenario() -> tuple[list[str], dict[str, int], tuple[bool, bool], list[str],
                                  list[str], bool]:
        async with make_peers(sock_dir, "alice", "bob") as (alice, bob):
            await start_and_connect(alice, bob)
            bob_session = bob.links.links[alice.node_id].inbound.session_id
            for i in range(3):  # queued in the outbox
                await alice.links.send(bob.node_id, "warning", warning(f"m{i}"))
            fault = alice.links.faults.set(bob.node_id, delay_ms=20)
            for i in range(3, 6):  # through the fault, after the queue is flushed
                await alice.links.send(bob.node_id, "warning", warning(f"m{i}"))
            await until(lambda: len(bob.warnings_from(alice)) == 6,
                        "bob to handle 6 warnings")
            connected = (alice.links.is_connected(bob.node_id),
                         bob.links.is_connected(alice.node_id))
            same_session = bob.links.links[alice.node_id].inbound.session_id == bob_session
            return (bob.warnings_from(alice), dict(fault.counts), connected,
                    alice.events.kinds, bob.events.kinds, same_session)

    handled, counts, connected, alice_events, bob_events, same_session = asyncio.run(scenario())
    assert handled == [f"m{i}" for i in range(6)]
    assert counts == {"delayed": 3}  # the last three really went through the fault
    assert connected == (True, True)
    assert same_session
    assert "disconnected" not in alice_events + bob_events
    assert alice_events.count("connected") == bob_events.count("connected") == 1


def test_messages_from_the_router_side_are_batched_and_ordered_too(sock_dir):
    """Messages bob (ROUTER side) sends in one turn reach alice in order, in one ZeroMQ message."""
    count = 5

    async def scenario() -> tuple[list[str], list[list[str]]]:
        async with make_peers(sock_dir, "alice", "bob") as (alice, bob):
            await start_and_connect(alice, bob)
            batches: list[list[str]] = []  # per ZeroMQ message alice read: its lnemu types
            original = alice.links._on_dealer_message

            async def on_dealer_message(link: Any, sock: Any, frames: list[bytes]) -> None:
                batches.append(message_types(frames))
                await original(link, sock, frames)

            # the dealer's reader looks the method up for every message
            alice.links._on_dealer_message = on_dealer_message  # type: ignore[method-assign]
            for i in range(count):
                await bob.links.send(alice.node_id, "warning", warning(f"r{i}"))
            await until(lambda: len(alice.warnings_from(bob)) == count,
                        f"alice to handle {count} warnings")
            return alice.warnings_from(bob), [b for b in batches if "warning" in b]

    handled, batches = asyncio.run(scenario())
    assert handled == [f"r{i}" for i in range(count)]
    assert batches == [["warning"] * count]


def batch_journal(sock_dir: Path, first: str, answer: str, followers: int) -> list[Any]:
    """bob sends alice, in one turn, a ``first`` message (an update_fulfill_htlc or a
    warning) then ``followers`` warnings; alice answers the first with ``answer`` (a
    warning or an update_fulfill_htlc). Returns alice's journal of what she handled and
    what she sent to bob, in the order it happened."""
    bodies = {"warning": warning("first"), "update_fulfill_htlc": fulfill(0)}

    async def scenario() -> list[Any]:
        async with make_peers(sock_dir, "alice", "bob") as (alice, bob):
            await start_and_connect(alice, bob)
            journal: list[Any] = []
            record_sends(alice, bob, journal)

            async def react(sender: bytes, env: Envelope) -> None:
                journal.append(("handled", env.type))
                if len(alice.received) == 1:  # the first (a session keeps the order)
                    await alice.links.send(bob.node_id, answer, bodies[answer])

            alice.react = react
            await bob.links.send(alice.node_id, first, bodies[first])
            for i in range(followers):
                await bob.links.send(alice.node_id, "warning", warning(f"after{i}"))
            await until(lambda: len(alice.received) == followers + 1
                        and any(kind == answer for _, kind, _ in bob.received),
                        "alice to handle the batch and bob her answer")
            return journal

    return asyncio.run(scenario())


def test_an_urgent_message_in_a_small_batch_is_answered_before_the_rest(sock_dir):
    """What an urgent message in a small batch set off leaves before the rest is handled."""
    followers = SMALL_BATCH - 1
    journal = batch_journal(sock_dir, "update_fulfill_htlc", "warning", followers)
    assert journal == [("handled", "update_fulfill_htlc"),
                       ("send", "bob", ["warning"]),
                       *[("handled", "warning")] * followers]


def test_a_big_batch_is_handled_whole_before_the_answer_leaves(sock_dir):
    """A batch bigger than SMALL_BATCH is handled whole before an urgent message's answer leaves."""
    followers = SMALL_BATCH
    journal = batch_journal(sock_dir, "update_fulfill_htlc", "warning", followers)
    assert journal == [("handled", "update_fulfill_htlc"),
                       *[("handled", "warning")] * followers,
                       ("send", "bob", ["warning"])]


@pytest.mark.parametrize("followers", [1, SMALL_BATCH + 2])
def test_a_fulfill_a_message_set_off_leaves_before_the_next_message_is_handled(
        sock_dir, followers):
    """The fulfills a message set off (a payee settling what a revocation locked in)
    leave before the next message of the batch (the commitment that came with the
    revocation) is handled, whatever the batch's size."""
    journal = batch_journal(sock_dir, "warning", "update_fulfill_htlc", followers)
    assert journal == [("handled", "warning"),
                       ("send", "bob", ["update_fulfill_htlc"]),
                       *[("handled", "warning")] * followers]


def test_other_answers_leave_with_the_turn(sock_dir):
    """What is not urgent waits for the end of the batch, to leave with the rest."""
    followers = 2
    journal = batch_journal(sock_dir, "warning", "warning", followers)
    assert journal == [*[("handled", "warning")] * (followers + 1),
                       ("send", "bob", ["warning"])]


def test_a_message_sent_after_healing_a_delay_waits_for_the_delayed_ones(sock_dir):
    """Healing a delayed link keeps order: what was delayed arrives before what follows."""
    async def scenario() -> tuple[list[str], list[str]]:
        async with make_peers(sock_dir, "alice", "bob") as (alice, bob):
            await start_and_connect(alice, bob)
            alice.links.faults.set(bob.node_id, delay_ms=50)
            for i in range(2):  # held back for 50 ms by the fault
                await alice.links.send(bob.node_id, "warning", warning(f"m{i}"))
            alice.links.faults.heal(bob.node_id)  # "what is queued still goes, in order"
            await alice.links.send(bob.node_id, "warning", warning("m2"))
            await until(lambda: len(bob.warnings_from(alice)) == 3
                        or "disconnected" in bob.events.kinds,
                        "bob to handle 3 warnings or to drop the session")
            return bob.warnings_from(alice), bob.events.kinds

    handled, bob_events = asyncio.run(scenario())
    assert "disconnected" not in bob_events
    assert handled == ["m0", "m1", "m2"]
