"""Links to other peers: sockets, sessions, init, ping/pong, reconnects.

Each peer binds one ROUTER for p2p traffic. A link is either *out* (we connected
a DEALER, with our node id as identity, to the other's ROUTER) or *in* (the other
side connected to ours). The connecting side sends ``init`` first; the listening
side answers with its own ``init``. Every later message carries the sender's
session id and sequence number (``emulator.session``); a gap, duplicate or stale
message ends the session: both sides mark the link down, and the connecting side
reconnects with back-off on a fresh socket. ``disconnect`` (our stand-in for a TCP
close) and sessionless ``error``/``warning`` travel out of band.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from emulator import barrier, envelope, transport
from emulator.envelope import Envelope, EnvelopeError
from emulator.errors import LnemuError, NotFound
from emulator.events import EventEmitter
from emulator.session import InboundSession, OutboundSession, SessionError
from emulator.sockio import SocketIO, hand_over
from peers.config import Timers
from peers.linkfaults import LinkFaults

OUT_OF_BAND = {"disconnect", "error", "warning"}
OUTBOX_MAX = 256  # queued messages that make the outbox flush before the turn ends
# settling or failing an HTLC: whoever waits for it (upstream, the payer) hears at once
URGENT = {"update_fulfill_htlc", "update_fail_htlc", "update_fail_malformed_htlc"}
SMALL_BATCH = 4  # messages in one batch up to which urgent ones are let through first
ZERO_CHANNEL = b"\x00" * 32
FEATURES = 0

Handler = Callable[[bytes, Envelope], Awaitable[None]]


class LinkDown(LnemuError):
    code = "peer_disconnected"


@dataclass
class Link:
    """One link to another peer."""

    node_id: bytes
    direction: str  # "out" or "in"
    endpoint: str | None = None
    dealer: zmq.asyncio.Socket | None = None
    outbound: OutboundSession = field(default_factory=OutboundSession)
    inbound: InboundSession = field(default_factory=InboundSession)
    connected: bool = False
    alias: str = ""
    address: str | None = None  # where the peer says it listens (from its init)
    pong_due: float | None = None  # loop time by which a pong must arrive
    backoff: float = 0.0
    io: SocketIO | None = None  # reads and writes the dealer
    watcher: asyncio.Task | None = None
    keeper: asyncio.Task | None = None
    fault: str | None = None  # dev: the next message violates the session this way

    def info(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "direction": self.direction,
                "endpoint": self.endpoint, "connected": self.connected, "alias": self.alias}


class LinkManager:
    """Owns the p2p sockets and every link's session."""

    def __init__(self, ctx: zmq.asyncio.Context, node_id: bytes, p2p: str, timers: Timers,
                 events: EventEmitter, log: logging.Logger, handler: Handler,
                 alias: str = "") -> None:
        self.address = p2p
        self.ctx, self.node_id, self.timers = ctx, node_id, timers
        self.events, self.log, self.handler, self.alias = events, log, handler, alias
        self.router = transport.router(ctx, p2p)
        self._router_io: SocketIO | None = None
        # messages of this loop turn, per link session: id -> (link, session, frames)
        self._outbox: dict[int, tuple[Link, OutboundSession, list[bytes]]] = {}
        self._queued = 0
        self._flush_due = False
        self._urgent_queued = False  # a fulfill or fail waits in the outbox
        self.links: dict[bytes, Link] = {}
        self.faults = LinkFaults()
        self.on_connected: Callable[[bytes], Awaitable[None]] | None = None
        self.on_disconnected: Callable[[bytes], None] | None = None
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("p2p task died: %r", exc, exc_info=exc)
            self.events.emit("error", where="p2p", error=repr(exc))

    async def start(self) -> None:
        self._router_io = SocketIO(self.router, self._on_router_message)

    async def close(self) -> None:
        try:
            self.flush()  # a clean stop sends what this turn queued
        except Exception as exc:
            self.log.info("p2p: queued messages not sent at close: %r", exc)
        for link in self.links.values():
            self._close_dealer(link)
            if link.keeper:
                link.keeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._router_io is not None:
            self._router_io.close()
        self.router.close(linger=0)

    def is_connected(self, node_id: bytes) -> bool:
        """True while a session with ``node_id`` is up."""
        link = self.links.get(node_id)
        return link is not None and link.connected

    # --- sending ----------------------------------------------------------------
    async def send(self, node_id: bytes, type_name: str, body: dict[str, Any]) -> None:
        """Send one message in the link's session; raise LinkDown if not connected.

        It leaves with the others of this loop turn (see :meth:`flush`); on a link with
        a fault (delay, loss, ...) it goes through the fault instead, in order."""
        link = self.links.get(node_id)
        if link is None or (not link.connected and type_name != "init"):
            raise LinkDown(f"not connected to {node_id.hex()}")
        session, seq = link.outbound.stamp()
        session, seq = self._apply_fault(link, session, seq)
        data = envelope.pack(type_name, body, sender=self.node_id, session=session, seq=seq)
        if self.faults.active(node_id):
            await self._send_raw(link, data)
            return
        queued = self._outbox.get(id(link.outbound))
        if queued is None:
            queued = self._outbox[id(link.outbound)] = (link, link.outbound, [])
        queued[2].append(data)
        self._queued += 1
        if type_name in URGENT:
            self._urgent_queued = True
        if self._queued >= OUTBOX_MAX:
            self.flush()
        elif not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what this loop turn queued: after one pass of the write-ahead barrier
        (one commit for all), each link's messages in order, in one ZeroMQ message.
        A link whose session ended meanwhile loses its queue, as a closed TCP
        connection would (channel_reestablish retransmits what matters)."""
        self._flush_due = False
        self._urgent_queued = False
        if not self._outbox:
            return
        outbox, self._outbox, self._queued = self._outbox, {}, 0
        barrier.before_send()
        for link, session, frames in outbox.values():
            if link.outbound is not session or self.links.get(link.node_id) is not link:
                continue
            try:
                if link.direction == "out":
                    if link.io is None:
                        raise LinkDown("no socket")
                    link.io.send_multipart(frames)
                else:
                    self._router_io.send_multipart([link.node_id, *frames])
            except (zmq.ZMQError, LinkDown) as exc:
                self._spawn(self._drop(link, f"send failed: {exc}", notify=False))
        hand_over()  # the batch leaves now, not after what this turn does next

    def _apply_fault(self, link: Link, session: bytes, seq: int) -> tuple[bytes, int]:
        fault, link.fault = link.fault, None
        if fault == "gap":
            link.outbound.next_seq += 1
            return session, seq + 1
        if fault == "duplicate":
            return session, seq - 1
        if fault == "stale_session":
            return bytes(16), seq
        return session, seq

    async def _send_raw(self, link: Link, data: bytes) -> None:
        self.flush()  # what is queued goes first
        async def send(payload: bytes) -> None:
            barrier.before_send()
            if link.direction == "out":
                if link.io is None:
                    raise LinkDown("no socket")
                link.io.send(payload)
            else:
                self._router_io.send_multipart([link.node_id, payload])
        try:
            await self.faults.transmit(link.node_id, data, send)
        except (zmq.ZMQError, LinkDown) as exc:
            await self._drop(link, f"send failed: {exc}", notify=False)
            raise LinkDown(f"sending to {link.node_id.hex()[:16]} failed: {exc}") from None

    async def _send_oob(self, link: Link | None, identity: bytes, type_name: str,
                        body: dict[str, Any], dealer: SocketIO | None = None) -> None:
        """A sessionless message (disconnect, error, warning); ``dealer``: our outbound
        socket to it, if that is where the message goes."""
        if self.faults.blocks(identity):
            return
        data = envelope.pack(type_name, body, sender=self.node_id)
        try:
            self.flush()  # after what is queued
            barrier.before_send()
            if dealer is not None:
                dealer.send(data)
            else:
                self._router_io.send_multipart([identity, data])
        except zmq.ZMQError:
            pass  # the other side is gone; nothing to tell

    # --- connecting ---------------------------------------------------------------
    async def connect(self, node_id: bytes, endpoint: str) -> Link:
        """Open (or keep) an outbound link to ``node_id`` at ``endpoint``."""
        transport.check_endpoint(endpoint)
        if node_id == self.node_id:
            raise LnemuError("cannot connect to ourselves", code="bad_request")
        link = self.links.get(node_id)
        if link is not None and (link.direction == "in" or link.endpoint == endpoint):
            return link
        if link is not None:
            self._close_dealer(link)
        link = Link(node_id, "out", endpoint)
        self.links[node_id] = link
        link.keeper = self._spawn(self._keep_out_link(link))
        return link

    async def disconnect(self, node_id: bytes, reason: str = "requested") -> None:
        """Close the link to ``node_id`` and forget it (no reconnect)."""
        link = self.links.pop(node_id, None)
        if link is None:
            raise NotFound(f"no link to {node_id.hex()}")
        if link.connected:
            await self._send_oob(link, node_id, "disconnect", {"reason": reason},
                                 dealer=link.io)
        if link.keeper:
            link.keeper.cancel()
        self._close_dealer(link)
        self._mark_down(link, reason)

    def _close_dealer(self, link: Link) -> None:
        if link.io:
            link.io.close()
            link.io = None
        if link.watcher:
            link.watcher.cancel()
            link.watcher = None
        if link.dealer is not None:
            link.dealer.disable_monitor()
            link.dealer.close(linger=0)
            link.dealer = None

    async def _keep_out_link(self, link: Link) -> None:
        """Connect, then keep the link alive; reconnect with back-off when it drops."""
        while True:
            if not link.connected:
                await self._dial(link)
                await asyncio.sleep(self.timers.ping_timeout)
                if not link.connected:
                    link.backoff = min(max(link.backoff * 2, self.timers.reconnect_min),
                                       self.timers.reconnect_max)
                    await asyncio.sleep(link.backoff * (0.5 + random.random()))
                continue
            await self._ping_cycle(link)

    async def _dial(self, link: Link) -> None:
        self._close_dealer(link)
        link.dealer = transport.dealer(self.ctx, link.endpoint, identity=self.node_id,
                                       immediate=False)
        sock = link.dealer
        link.io = SocketIO(sock, lambda frames: self._on_dealer_message(link, sock, frames))
        link.watcher = self._spawn(self._watch_connection(link, link.dealer))
        link.outbound = OutboundSession()
        link.inbound.reset()
        await self._send_init(link)

    async def _send_init(self, link: Link) -> None:
        session, seq = link.outbound.stamp()
        body = {"session": session, "node_id": self.node_id, "features": FEATURES,
                "alias": self.alias, "address": self.address}
        data = envelope.pack("init", body, sender=self.node_id, session=session, seq=seq)
        try:
            await self._send_raw(link, data)
        except LinkDown:
            pass

    async def _ping_cycle(self, link: Link) -> None:
        """While connected: ping every interval; no pong in time means disconnected."""
        await asyncio.sleep(self.timers.ping_interval)
        if not link.connected:
            return
        loop = asyncio.get_running_loop()
        link.pong_due = loop.time() + self.timers.ping_timeout
        try:
            await self.send(link.node_id, "ping", {"num_pong_bytes": 4})
        except LinkDown:
            return
        await asyncio.sleep(self.timers.ping_timeout)
        if link.connected and link.pong_due is not None and loop.time() >= link.pong_due:
            await self._drop(link, "ping timeout")

    # --- receiving -----------------------------------------------------------------
    async def _watch_connection(self, link: Link, sock: zmq.asyncio.Socket) -> None:
        """A closed connection (the peer died) ends the session at once, as a TCP
        reset would; the keeper then redials with back-off."""
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            while True:
                await monitor.recv_multipart()
                if link.dealer is sock and link.connected:
                    await self._drop(link, "connection lost", notify=False)
        finally:
            monitor.close(linger=0)

    async def _on_router_message(self, frames: list[bytes]) -> None:
        """[identity, message, message, ...]: what the other side sent in one turn."""
        if len(frames) < 2:
            self.log.warning("p2p: dropped a message of %d frame(s)", len(frames))
            return
        for i, data in enumerate(frames[1:], start=2):
            kind = await self._receive(frames[0], data, None)
            await self._after(kind, len(frames) - 1, last=i == len(frames))

    async def _on_dealer_message(self, link: Link, sock: zmq.asyncio.Socket,
                                 frames: list[bytes]) -> None:
        for i, data in enumerate(frames, start=1):
            if link.dealer is not sock:  # a redial replaced the socket
                return
            kind = await self._receive(link.node_id, data, link)
            await self._after(kind, len(frames), last=i == len(frames))

    async def _after(self, kind: str | None, batch: int, last: bool) -> None:
        """Let what settles or fails HTLCs out before the next message is handled.

        What an urgent message set off (a preimage going upstream, a payer's answer)
        goes out before the rest of its small batch, or the next batch already queued
        (say, a commitment to check), is handled; a big batch (a loaded channel) is
        handled whole instead, so that one commitment covers all of it. And the
        fulfills a revocation set off (the payee settling what it locked in) leave
        before the commitment that came with it is checked and answered."""
        if kind in URGENT:
            if batch <= SMALL_BATCH:
                self.flush()
                if not last:
                    await asyncio.sleep(0)
        elif self._urgent_queued:
            self.flush()

    async def _receive(self, identity: bytes, data: bytes, via: Link | None) -> str | None:
        """Handle one message; its type once it reached the handler (else None)."""
        if self.faults.blocks(identity):
            return  # partitioned: nothing gets through
        try:
            env = envelope.unpack(data)
            if env.sender != identity:
                raise EnvelopeError(f"sender {_hex(env.sender)} does not match the "
                                    f"connection's identity {identity.hex()[:16]}")
        except EnvelopeError as exc:
            if identity[:1] == b"\x00":
                return  # leftovers of a connection ZeroMQ renamed on handover: drop quietly
            self.log.warning("p2p: bad message from %s: %s", identity.hex()[:16], exc)
            self.events.emit("bad_message", peer=identity, error=str(exc), code=exc.code)
            await self._send_oob(via, identity, "error",
                                 {"channel_id": ZERO_CHANNEL, "data": f"{exc.code}: {exc}"},
                                 dealer=via.io if via else None)
            return
        if env.type in OUT_OF_BAND and not env.session:
            await self._on_out_of_band(identity, env)
            return
        link = via or self.links.get(identity)
        if env.type == "init" and via is None:
            link = await self._accept_inbound(identity, env)
            if link is None:
                return
        if link is None:
            await self._send_oob(None, identity, "disconnect",
                                 {"reason": f"no session: {env.type} before init"})
            return
        try:
            new_session = link.inbound.accept(env)
        except SessionError as exc:
            await self._drop(link, str(exc), reason_code=exc.reason)
            return None
        await self._on_session_message(link, env, new_session)
        return env.type

    async def _accept_inbound(self, identity: bytes, env: Envelope) -> Link | None:
        link = self.links.get(identity)
        if link is not None and link.direction == "out":
            if self.node_id < identity:  # both dialled: the lower id's outbound link wins
                await self._send_oob(None, identity, "disconnect",
                                     {"reason": "duplicate link; keeping mine"})
                return None
            if link.keeper:
                link.keeper.cancel()
            self._close_dealer(link)
            link = None
        if link is None:
            link = Link(identity, "in")
            self.links[identity] = link
        link.outbound = OutboundSession()
        link.connected = False
        return link

    async def _on_session_message(self, link: Link, env: Envelope, new_session: bool) -> None:
        if env.type == "init":
            link.alias = env.body.get("alias", "")
            if env.body.get("address"):
                link.address = env.body["address"]
            if self.on_disconnected is not None:
                self.on_disconnected(link.node_id)  # a new session: the old one is over
            if link.direction == "in":
                await self._send_init(link)
            link.connected, link.backoff, link.pong_due = True, 0.0, None
            self.events.emit("connected", peer=link.node_id, direction=link.direction,
                             alias=link.alias)
            if self.on_connected is not None:
                try:
                    await self.on_connected(link.node_id)
                except Exception as exc:  # must not stop the link's reader
                    self.log.error("p2p: after connecting %s: %r", link.node_id.hex()[:16],
                                   exc, exc_info=exc)
                    self.events.emit("error", where="on_connected", error=repr(exc))
            return
        if env.type == "ping":
            await self._safe_send(link, "pong", {"ignored": bytes(env.body["num_pong_bytes"])})
            return
        if env.type == "pong":
            link.pong_due = None
            return
        if env.type == "disconnect":
            await self._on_out_of_band(link.node_id, env)
            return
        try:
            await self.handler(link.node_id, env)
        except Exception as exc:  # a bug in one handler must not stop the link
            self.log.error("p2p: handling %s from %s failed: %r", env.type,
                           link.node_id.hex()[:16], exc, exc_info=exc)
            self.events.emit("error", where=f"on_{env.type}", error=repr(exc))

    async def _safe_send(self, link: Link, type_name: str, body: dict[str, Any]) -> None:
        try:
            await self.send(link.node_id, type_name, body)
        except LinkDown:
            pass

    async def _on_out_of_band(self, identity: bytes, env: Envelope) -> None:
        link = self.links.get(identity)
        if env.type == "disconnect":
            if link is not None and link.connected:
                self._mark_down(link, f"remote: {env.body['reason']}")
            elif link is not None:
                link.inbound.reset()
            return
        self.log.warning("p2p: %s from %s: %s", env.type, identity.hex()[:16], env.body["data"])
        self.events.emit(f"received_{env.type}", peer=identity, data=env.body["data"])

    async def _drop(self, link: Link, reason: str, notify: bool = True,
                    reason_code: str | None = None) -> None:
        """End the link's session; tell the other side unless it is unreachable."""
        if notify:
            await self._send_oob(link, link.node_id, "disconnect", {"reason": reason},
                                 dealer=link.io)
        self._mark_down(link, reason, reason_code)

    def _mark_down(self, link: Link, reason: str, reason_code: str | None = None) -> None:
        link.inbound.reset()
        if link.connected:
            link.connected = False
            self.log.info("disconnected from %s: %s", link.node_id.hex()[:16], reason)
            self.events.emit("disconnected", peer=link.node_id, reason=reason,
                             code=reason_code or "")
            if self.on_disconnected is not None:
                self.on_disconnected(link.node_id)

    def inject_fault(self, node_id: bytes, kind: str) -> None:
        """Dev: make the next message to ``node_id`` break the session (gap, duplicate,
        stale_session), as a byzantine transport would."""
        if kind not in {"gap", "duplicate", "stale_session"}:
            raise LnemuError(f"unknown link fault {kind!r}", code="bad_request")
        link = self.links.get(node_id)
        if link is None or not link.connected:
            raise NotFound(f"not connected to {node_id.hex()}")
        link.fault = kind


def _hex(value: bytes | str) -> str:
    return value.hex()[:16] if isinstance(value, bytes) else repr(value)
