"""Control-RPC clients: ``{op, args, rid}`` requests over a DEALER, matched replies.

The synchronous :class:`RpcClient` serves the CLI, the runner and tests; the
:class:`AsyncRpcClient` serves processes (a peer calling the chain) inside their
asyncio loop. Remote failures come back as :class:`RpcError` with the remote code.

Every keyword but ``reply_timeout`` is the verb's own argument: ``timeout`` too (a
payment's budget, say), and then the client waits at least that long, plus a margin,
for the answer.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import zmq
import zmq.asyncio

from emulator import barrier, envelope, transport
from emulator.errors import LnemuError

REPLY_MARGIN_S = 5.0  # past a verb's own ``timeout``: its answer still has to come back
REPLY_WAIT_MAX_S = 2 * 86_400.0  # no verb runs longer (and zmq polls take an int of ms)


class RpcError(LnemuError):
    """The remote process answered with an error ``{code, message}``."""

    code = "rpc_error"


class RpcTimeout(LnemuError):
    """No reply within the timeout: the process is gone, paused or overloaded."""

    code = "timeout"


def _result(body: dict[str, Any], op: str) -> Any:
    if body.get("ok"):
        return body.get("result")
    err = body.get("error") or {}
    raise RpcError(f"{op}: {err.get('message', 'unknown error')}",
                   code=str(err.get("code", "rpc_error")))


def _reply_wait(default: float, reply_timeout: float | None, args: dict[str, Any]) -> float:
    """How long to wait for the answer: as asked, else long enough for the verb's own
    ``timeout`` (when it has one), else the client's default."""
    if reply_timeout is not None:
        return reply_timeout
    verb_timeout = args.get("timeout")
    if isinstance(verb_timeout, int | float) and not isinstance(verb_timeout, bool):
        return min(max(default, verb_timeout + REPLY_MARGIN_S), REPLY_WAIT_MAX_S)
    return default


class RpcClient:
    """A blocking control-RPC client for one endpoint."""

    def __init__(self, endpoint: str, timeout: float = 10.0,
                 ctx: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self._rids = itertools.count(1)
        self.sock = transport.dealer(self.ctx, endpoint, immediate=False)

    def call(self, op: str, reply_timeout: float | None = None, **args: Any) -> Any:
        """Call ``op`` with ``args``; return its result or raise RpcError/RpcTimeout."""
        rid = next(self._rids)
        barrier.before_send()
        self.sock.send(envelope.pack_request(op, args, rid))
        deadline = _reply_wait(self.timeout, reply_timeout, args)
        loop_deadline = time.monotonic() + deadline
        while True:
            remaining = loop_deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000)):
                self._reset()
                raise RpcTimeout(f"{op}: no reply from {self.endpoint} within {deadline:.1f}s")
            body = envelope.unpack_control(self.sock.recv(), "reply")
            if body["rid"] == rid:
                return _result(body, op)

    def _reset(self) -> None:
        # a late reply must not be taken for the answer to the next call
        self.sock.close(linger=0)
        self.sock = transport.dealer(self.ctx, self.endpoint, immediate=False)

    def close(self) -> None:
        self.sock.close(linger=0)
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRpcClient:
    """An asyncio control-RPC client; many calls may be in flight at once."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.sock = transport.dealer(ctx, endpoint, immediate=False)
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def call(self, op: str, reply_timeout: float | None = None, **args: Any) -> Any:
        """Call ``op``; return its result or raise RpcError/RpcTimeout."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        rid = next(self._rids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            barrier.before_send()
            await self.sock.send(envelope.pack_request(op, args, rid))
            body = await asyncio.wait_for(fut, _reply_wait(self.timeout, reply_timeout, args))
        except TimeoutError:
            raise RpcTimeout(f"{op}: no reply from {self.endpoint}") from None
        finally:
            self._waiting.pop(rid, None)
        return _result(body, op)

    async def _read(self) -> None:
        while True:
            data = await self.sock.recv()
            try:
                body = envelope.unpack_control(data, "reply")
            except envelope.EnvelopeError:
                continue
            fut = self._waiting.get(body["rid"])
            if fut is not None and not fut.done():
                fut.set_result(body)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.sock.close(linger=0)
