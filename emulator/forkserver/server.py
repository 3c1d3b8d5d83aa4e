"""The fork server's loop: import the preload modules, then fork on request.

Run as ``python -m emulator.forkserver --status-dir DIR MODULE...`` by
:class:`emulator.forkserver.ForkServer`. One thread and no ZeroMQ context (children
create their own after the fork). The loop blocks in a selector on two pipes: the
request pipe (stdin, one JSON object per line) and a wake-up pipe that the signal
module writes the number of each SIGCHLD, SIGTERM or SIGINT to. Replies go to
stdout, one JSON object per line; the server's own stdout and stdin are pointed at
stderr and /dev/null so that a stray print cannot corrupt them.

For each child it reaps, the server writes the exit code (negative for a signal,
as ``os.waitstatus_to_exitcode`` gives it) atomically to ``<status dir>/<name>``,
the name it answered the spawn request with. When the request pipe closes (or on
SIGTERM/SIGINT) it kills the process group of every child still running, reaps
them, writes their exit codes and exits.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import selectors
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emulator.forkserver.child import child_main
from emulator.forkserver.pipes import read_to_end, write_all


def _note_signal(_signum: int, _frame: Any) -> None:
    """A Python-level handler, so that the wake-up fd receives the signal number."""


class _Server:
    """The request loop: fork children, reap them, record their exit codes."""

    def __init__(self, status_dir: Path, requests: int, replies: int) -> None:
        self.status_dir = status_dir
        self.requests = requests
        self.replies = replies
        self.children: dict[int, str | None] = {}  # pid -> status file name
        self.pending = b""
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.requests, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def run(self) -> int:
        """Answer requests until the request pipe closes or SIGTERM/SIGINT arrives."""
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _note_signal)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self._reply({"rid": 0, "ok": True, "pid": os.getpid()})
        while not self.stopping:
            for key, _ in self.selector.select():
                if key.fd == self.wake_r:
                    self._on_signals()
                else:
                    self._on_requests()
            self._reap(block=False)
        self._shutdown()
        return 0

    def _on_signals(self) -> None:
        try:
            received = os.read(self.wake_r, 4096)
        except BlockingIOError:
            return
        if signal.SIGTERM in received or signal.SIGINT in received:
            self.stopping = True

    def _on_requests(self) -> None:
        data = os.read(self.requests, 65536)
        if not data:
            self.stopping = True  # the supervisor closed the pipe (or died)
            return
        self.pending += data
        while b"\n" in self.pending and not self.stopping:
            line, self.pending = self.pending.split(b"\n", 1)
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        rid = None
        try:
            request = json.loads(line)
            rid = request.get("rid")
            if request.get("op") != "spawn":
                raise ValueError(f"unknown op {request.get('op')!r}")
            reply = self._spawn(request)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._reply({"rid": rid, **reply})

    def _spawn(self, request: dict[str, Any]) -> dict[str, Any]:
        _check_spawn_request(request)
        server_pid = os.getpid()
        sync_r, sync_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()  # or the child would write our buffered output again
        gc.freeze()  # objects made since start-up stay out of the children's collections
        try:
            pid = os.fork()
        except OSError:
            os.close(sync_r)
            os.close(sync_w)
            raise
        if pid == 0:
            os.close(sync_r)
            child_main(request, server_pid, sync_w, self)  # never returns
        os.close(sync_w)
        report = read_to_end(sync_r)
        os.close(sync_r)
        if report != b"ok":
            self.children[pid] = None  # reap it, but there is nobody to tell
            raise OSError(f"the child exited while being set up: "
                          f"{report.decode(errors='replace') or 'no report'}")
        name = f"{pid}-{request['rid']}"
        self.children[pid] = name
        return {"ok": True, "pid": pid, "status": name}

    def close_fds(self) -> None:
        """In a fresh child: drop the server's pipes, so EOF and EPIPE still work."""
        signal.set_wakeup_fd(-1)
        self.selector.close()
        for fd in (self.requests, self.replies, self.wake_r, self.wake_w):
            os.close(fd)

    def _reply(self, reply: dict[str, Any]) -> None:
        try:
            write_all(self.replies, json.dumps(reply).encode() + b"\n")
        except BrokenPipeError:
            self.stopping = True  # the supervisor is gone

    def _reap(self, block: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.children.pop(pid, None)
            if name is not None:
                self._write_status(name, os.waitstatus_to_exitcode(status))

    def _write_status(self, name: str, code: int) -> None:
        tmp = self.status_dir / f".{name}.tmp"
        tmp.write_text(f"{code}\n")
        tmp.replace(self.status_dir / name)

    def _shutdown(self) -> None:
        # Owners stop their children before closing us; kill whatever is left, with
        # its process group, and record the exit codes before leaving.
        if self.children:
            print(f"fork server: killing {len(self.children)} child(ren) still running: "
                  f"{sorted(self.children)}", file=sys.stderr, flush=True)
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap(block=True)


def _check_spawn_request(request: dict[str, Any]) -> None:
    if not (isinstance(request["args"], list) and isinstance(request["env"], dict)):
        raise TypeError("args must be a list and env an object")
    strings = [request["module"], request["log"], *request["args"], *request["env"].keys(),
               *request["env"].values()]
    if not all(isinstance(s, str) for s in strings):
        raise TypeError("module, log, args and env must be strings")
    if not isinstance(request["rid"], int):
        raise TypeError("rid must be an integer")


def serve(status_dir: Path, preload: Sequence[str]) -> int:
    """Run the server on stdin (requests) and stdout (replies); the exit code."""
    gc.disable()  # no collections while importing: no freed holes in shared pages
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # stray prints from imports must not corrupt the replies
    os.close(null)
    for name in preload:
        importlib.import_module(name)
    gc.freeze()
    return _Server(Path(status_dir), requests, replies).run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emulator.forkserver --status-dir DIR [MODULE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m emulator.forkserver",
                                     description="Fork lnemu processes from preloaded modules.")
    parser.add_argument("--status-dir", required=True,
                        help="where each child's exit code is written, in a file per child")
    parser.add_argument("preload", nargs="*", help="modules to import before forking")
    args = parser.parse_args(argv)
    return serve(Path(args.status_dir), args.preload)


if __name__ == "__main__":
    sys.exit(main())
