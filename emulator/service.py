"""The process skeleton every lnemu process (chain, peer) runs on.

One asyncio loop (``zmq.asyncio``), a control ROUTER answering
``{op, args, rid}`` with ``{rid, ok, result | error}``, an event emitter, a ready
file for the supervisor, graceful stop on SIGTERM/SIGINT or the ``stop`` verb, and a
watchdog that ends the process when its parent is gone. Verbs are methods named
``rpc_<op>``; their docstrings are their help. Idle, the loop sleeps in the poller.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from emulator import barrier, envelope, transport
from emulator.errors import BadRequest, LnemuError
from emulator.events import EventEmitter
from emulator.sockio import SocketIO, hand_over
from emulator.supervisor import pid_alive

PARENT_CHECK_SECONDS = 2.0


def setup_logging(label: str, level: int = logging.INFO) -> logging.Logger:
    """Log lines carry the process label, e.g. ``[peer alice]``; they go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s [{label}] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(label)


class Service:
    """Base of a long-running lnemu process with a control RPC."""

    kind = "service"

    def __init__(self, name: str, control_endpoint: str, events_endpoint: str | None,
                 data_dir: str | Path, parent_pid: int | None = None) -> None:
        self.name = name
        self.label = f"{self.kind} {name}" if name != self.kind else self.kind
        self.log = logging.getLogger(self.label)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.control_endpoint = control_endpoint
        self.parent_pid = parent_pid  # the supervisor's pid
        self.start_ppid = os.getppid()  # the supervisor, or the fork server that forked us
        self.ctx = zmq.asyncio.Context()
        self.events = EventEmitter(self.ctx, events_endpoint, self.label, self.log)
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.control: zmq.asyncio.Socket | None = None
        self._control_io: SocketIO | None = None
        self._replies: list[tuple[bytes, bytes]] = []

    # --- life cycle -------------------------------------------------------------
    async def setup(self) -> None:
        """Bind sockets, load state. Subclasses extend."""

    async def teardown(self) -> None:
        """Release resources. Subclasses extend."""

    def resumed(self) -> None:
        """Called after the process was paused (SIGSTOP) and let run again (SIGCONT).
        Subclasses extend: what they know of the world may be out of date."""

    def ready_info(self) -> dict[str, Any]:
        """What the ready file tells the supervisor."""
        return {"pid": os.getpid(), "control": self.control_endpoint}

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        """Run ``coro`` as a task that logs (and reports) if it dies unexpectedly."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("task %s crashed: %r", task.get_name(), exc, exc_info=exc)
            self.events.emit("error", where=task.get_name(), error=repr(exc))

    async def run(self) -> None:
        """Run until stopped."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGCONT, self.resumed)
        self.control = transport.router(self.ctx, self.control_endpoint)
        await self.setup()
        self._control_io = SocketIO(self.control, self._on_control)
        if self.parent_pid:  # started by a supervisor: end with it
            self.spawn(self._watch_parent(), "parent-watchdog")
        self._write_ready()
        self.events.emit("started", pid=os.getpid())
        self.log.info("ready")
        await self.stopping.wait()
        self.log.info("stopping")
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.teardown()
        self.events.emit("stopped")
        self.events.close()
        self._control_io.close()
        self.control.close(linger=0)
        self.ctx.destroy(linger=0)

    def _write_ready(self) -> None:
        tmp = self.data_dir / "ready.tmp"
        tmp.write_text(json.dumps(self.ready_info()))
        tmp.replace(self.data_dir / "ready")

    async def _watch_parent(self) -> None:
        # Backs up PR_SET_PDEATHSIG. Our parent is the supervisor or, when forked by
        # the fork server, the server: if it died we were re-parented. The supervisor
        # may also die while a fork server (our parent) lingers.
        while True:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != self.start_ppid:
                self.log.warning("parent %s is gone; stopping", self.start_ppid)
                self.stopping.set()
                return
            if self.parent_pid and not pid_alive(self.parent_pid):
                self.log.warning("supervisor %s is gone; stopping", self.parent_pid)
                self.stopping.set()
                return

    # --- control RPC --------------------------------------------------------------
    async def _on_control(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.log.warning("control: dropped a message of %d frames", len(frames))
            return
        self.spawn(self._answer(frames[0], frames[1]), "rpc")  # a verb may take its time

    async def _answer(self, identity: bytes, data: bytes) -> None:
        rid = 0
        try:
            req = envelope.unpack_control(data, "request")
            rid = req["rid"]
            result = await self.dispatch(req["op"], req["args"])
            reply = envelope.pack_reply(rid, result)
        except LnemuError as exc:
            self.log.info("control: %s failed: %s", locals().get("req", {}).get("op"), exc)
            reply = envelope.pack_reply(rid, error={"code": exc.code, "message": str(exc)})
        except Exception as exc:  # a bug in a verb must not kill the process
            self.log.error("control: internal error: %r", exc, exc_info=exc)
            reply = envelope.pack_reply(rid, error={"code": "internal", "message": repr(exc)})
        self._replies.append((identity, reply))
        if len(self._replies) == 1:
            asyncio.get_running_loop().call_soon(self._send_replies)

    def _send_replies(self) -> None:
        """The replies of one loop turn leave together, after one pass of the barrier."""
        replies, self._replies = self._replies, []
        try:
            barrier.before_send()
        except Exception as exc:  # not durable, so not answered: the callers time out
            self.log.error("control: %d replies not sent: %r", len(replies), exc, exc_info=exc)
            return
        for identity, reply in replies:
            try:
                self._control_io.send_multipart([identity, reply])
            except zmq.ZMQError as exc:
                self.log.info("control: caller went away before the reply (%s)", exc)
        hand_over()

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        """Call ``rpc_<op>(**args)``; bad verbs and arguments are BadRequest."""
        handler = getattr(self, f"rpc_{op}", None) if op.isidentifier() else None
        if handler is None:
            raise BadRequest(f"unknown verb {op!r}; known: {', '.join(self.verbs())}")
        try:
            func = getattr(handler, "__func__", None)
            if func is not None:  # a method: its signature (with self) is made once
                _signature(func).bind(handler.__self__, **args)
            else:
                inspect.signature(handler).bind(**args)
        except TypeError as exc:
            raise BadRequest(f"{op}: {exc}") from None
        result = handler(**args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def verbs(self) -> list[str]:
        """The names of this process's control verbs."""
        return sorted(n[4:] for n in dir(self) if n.startswith("rpc_"))

    async def rpc_stop(self) -> str:
        """Stop this process gracefully."""
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return "stopping"

    async def rpc_help(self) -> dict[str, str]:
        """List the control verbs with their one-line help."""
        return {v: (inspect.getdoc(getattr(self, f"rpc_{v}")) or "").split("\n")[0]
                for v in self.verbs()}


@lru_cache(maxsize=1024)
def _signature(func: Any) -> inspect.Signature:
    return inspect.signature(func)


def run_service(service: Service) -> int:
    """Run a service's loop to completion; the process exit code."""
    try:
        asyncio.run(service.run())
    except KeyboardInterrupt:
        return 130
    return 0
