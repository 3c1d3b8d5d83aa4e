"""The one place that creates ZeroMQ sockets.

Every socket in lnemu comes from here, so that options (linger, handover,
mandatory routing, immediate) and, later, CurveZMQ encryption bound to node ids are
decided in one spot. Endpoints are ``ipc://`` files by default, in a short run
directory (ipc paths must stay under 107 bytes), or ``tcp://host:port`` when the
processes live on different hosts; nothing else changes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import zmq

from emulator.errors import LnemuError

IPC_PATH_MAX = 107
HWM = 100_000  # messages queued per peer before a send would block or drop


class EndpointError(LnemuError):
    code = "bad_endpoint"


def short_socket_dir(prefix: str = "lnemu-") -> Path:
    """A fresh, short directory for ipc socket files (under /tmp, not a deep path)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def ipc_endpoint(sock_dir: str | Path, name: str) -> str:
    """``ipc://`` endpoint for ``name`` in ``sock_dir``; checks the path length."""
    path = str(Path(sock_dir) / name)
    if len(path.encode()) >= IPC_PATH_MAX:
        raise EndpointError(f"ipc path {path!r} is {len(path.encode())} bytes; "
                            f"it must stay under {IPC_PATH_MAX}")
    return f"ipc://{path}"


def check_endpoint(endpoint: str) -> str:
    """Validate an endpoint string (ipc:// or tcp://host:port)."""
    if endpoint.startswith("ipc://"):
        if len(endpoint[6:].encode()) >= IPC_PATH_MAX:
            raise EndpointError(f"ipc path too long (>= {IPC_PATH_MAX} bytes): {endpoint}")
        return endpoint
    if endpoint.startswith("tcp://") and ":" in endpoint[6:]:
        return endpoint
    raise EndpointError(f"endpoint must be ipc://PATH or tcp://HOST:PORT, got {endpoint!r}")


def _base(ctx: zmq.Context, kind: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _bind(sock: zmq.Socket, endpoint: str) -> zmq.Socket:
    """Bind, closing the socket if that fails (an open one would block ctx.term())."""
    try:
        sock.bind(check_endpoint(endpoint))
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _connect(sock: zmq.Socket, endpoint: str) -> zmq.Socket:
    """Connect, closing the socket if that fails (an open one would block ctx.term())."""
    try:
        sock.connect(check_endpoint(endpoint))
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def router(ctx: zmq.Context, bind: str, *, handover: bool = True) -> zmq.Socket:
    """A bound ROUTER: a restarted peer takes its identity back; sends to a vanished
    identity raise (EHOSTUNREACH) instead of silently dropping."""
    sock = _base(ctx, zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if handover:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return _bind(sock, bind)


def dealer(ctx: zmq.Context, connect: str, identity: bytes | None = None,
           *, immediate: bool = True) -> zmq.Socket:
    """A connected DEALER. Peer links queue only to completed connections
    (IMMEDIATE); control clients may queue a request until the server is up."""
    sock = _base(ctx, zmq.DEALER)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.IMMEDIATE, 1 if immediate else 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return _connect(sock, connect)


def publisher(ctx: zmq.Context, bind: str) -> zmq.Socket:
    """A bound PUB socket (the chain's block feed)."""
    sock = _base(ctx, zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, HWM)
    return _bind(sock, bind)


def subscriber(ctx: zmq.Context, connect: str, topic: bytes = b"") -> zmq.Socket:
    """A SUB socket connected to a feed; PUB/SUB may drop, so readers catch up."""
    sock = _base(ctx, zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    return _connect(sock, connect)


def pusher(ctx: zmq.Context, connect: str) -> zmq.Socket:
    """A PUSH socket for events; the sender uses non-blocking sends."""
    sock = _base(ctx, zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, HWM)
    return _connect(sock, connect)


def puller(ctx: zmq.Context, bind: str) -> zmq.Socket:
    """A bound PULL socket (the runner's event collector)."""
    sock = _base(ctx, zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, HWM)
    return _bind(sock, bind)
