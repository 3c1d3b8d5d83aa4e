"""A fork server: import lnemu's heavy modules once, then fork a child per process.

Starting a peer as ``python -m peers`` costs 0.2-0.4 CPU-seconds of imports
(coincurve, zmq, msgpack, cryptography, click, sqlite3 and lnemu itself), and every
peer keeps its own copy of those modules. The fork server imports them once, calls
``gc.freeze()`` and forks a child per request: the child starts in milliseconds and
shares the imported pages copy-on-write.

The package has two halves:

* :class:`ForkServer` and :class:`ForkedChild`, used on the supervisor's side. A
  ``ForkedChild`` offers the part of ``subprocess.Popen`` that
  :class:`~emulator.supervisor.ManagedProcess` uses: ``pid``, ``poll()``,
  ``wait(timeout)`` and ``returncode``.
* :mod:`emulator.forkserver.server`, the server itself (``python -m
  emulator.forkserver``): one thread, never a ZeroMQ context (children create their
  own after the fork), blocked in a selector on its request pipe and on a wake-up
  pipe that SIGCHLD writes to. :mod:`emulator.forkserver.child` is what a child
  does between the fork and running its module.

The protocol is one JSON object per line: requests on the server's stdin, replies
on its stdout. The server reaps its children and writes each exit code (negative
for a signal, as in ``Popen.returncode``) atomically to a file in the status
directory, so the supervisor reads exit codes without a round trip.

Each child runs in its own session and process group, so ``os.killpg(pid, sig)``
reaches it exactly as it reaches a ``Popen(start_new_session=True)`` child. The
children die with the server and the server dies with the supervisor
(``PR_SET_PDEATHSIG``), so no process outlives a crashed run.
"""
from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emulator.errors import LnemuError
from emulator.forkserver.pipes import write_all
from emulator.supervisor import _die_with_parent, describe_exit, pid_alive
from emulator.waiting import timeout_scale

DEFAULT_PRELOAD = (
    "peers.node", "l1chain.server", "emulator.service", "coincurve", "zmq", "msgpack",
    "cryptography.hazmat.primitives.ciphers", "click", "sqlite3",
)
START_TIMEOUT = 30.0  # seconds for the server to import its preload modules
REPLY_TIMEOUT = 10.0  # seconds for the server to fork a child and answer
KILL_WAIT_SECONDS = 5.0
# Exit code reported for a child whose server died before it could record one:
# the child was killed by PR_SET_PDEATHSIG, which the server sets to SIGKILL.
LOST_EXIT_CODE = -signal.SIGKILL
WAIT_MAX_INTERVAL = 0.02  # ForkedChild.wait() polls its status file with back-off
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the server imports this tree


class ForkServerError(LnemuError):
    """The fork server could not start, died, or refused to start a child."""

    code = "forkserver"


# --- the supervisor's side -----------------------------------------------------------

class ForkedChild:
    """A process forked by the fork server, with the Popen interface ManagedProcess uses."""

    def __init__(self, server: ForkServer, pid: int, status_path: Path,
                 args: list[str]) -> None:
        self.pid = pid
        self.args = args  # named in subprocess.TimeoutExpired, as Popen.args is
        self.returncode: int | None = None
        self._server = server
        self._status_path = status_path

    def __repr__(self) -> str:
        return f"<ForkedChild pid={self.pid} {describe_exit(self.returncode)}>"

    def poll(self) -> int | None:
        """The exit code once the process has exited (negative: a signal), else None."""
        if self.returncode is None:
            code = self._read_status()
            if code is None and not self._server.alive:
                # Nobody will write the file now; it may have been written just
                # before the server died. Otherwise PDEATHSIG killed the child.
                code = self._read_status()
                if code is None and not pid_alive(self.pid):
                    code = LOST_EXIT_CODE
            self.returncode = code
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; raise ``subprocess.TimeoutExpired`` after ``timeout`` s.

        Polls the status file with a short back-off (1 ms up to 20 ms), much as
        ``Popen.wait(timeout)`` polls ``waitpid``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while (code := self.poll()) is None:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, WAIT_MAX_INTERVAL)
        return code

    def _read_status(self) -> int | None:
        try:
            return int(self._status_path.read_text())
        except FileNotFoundError:
            return None  # written atomically by the server once it reaped the child


class ForkServer:
    """Client of one fork-server process: start it, ask it for children, close it.

    Start it from a long-lived thread (the main thread): on Linux the server is
    killed when the thread that started it exits (PR_SET_PDEATHSIG).
    """

    def __init__(self, preload: Sequence[str] = DEFAULT_PRELOAD, *,
                 status_dir: Path | None = None, log_path: Path | None = None,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.preload = list(preload)
        self._owns_status_dir = status_dir is None
        self.status_dir = Path(status_dir or tempfile.mkdtemp(prefix="lnemu-forkserver-"))
        self.log_path = Path(log_path) if log_path is not None else None
        self.start_timeout = start_timeout
        self._popen: subprocess.Popen | None = None
        self._closed = False
        self._lock = threading.Lock()  # one request/reply exchange at a time
        self._request_ids = itertools.count(1)
        self._pending = b""  # reply bytes read but not yet split into lines
        self._children: list[ForkedChild] = []

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id), once started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        """True while the server process runs."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def children(self) -> list[ForkedChild]:
        """Every child forked so far, running or not, oldest first."""
        return list(self._children)

    def start(self) -> None:
        """Start the server and wait until it has imported its preload modules."""
        if self._popen is not None:
            raise ForkServerError("the fork server was started already")
        self.status_dir.mkdir(parents=True, exist_ok=True)
        if any(self.status_dir.iterdir()):
            raise ForkServerError(f"status directory {self.status_dir} is not empty; "
                                  "stale exit codes would be misread")
        argv = [sys.executable, "-m", "emulator.forkserver",
                "--status-dir", str(self.status_dir), *self.preload]
        python_path = [str(SOURCE_ROOT), *filter(None, os.environ.get(
            "PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
        parent_pid = os.getpid()
        stderr = open(self.log_path, "ab") if self.log_path is not None else None
        try:
            self._popen = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                bufsize=0, env=env, start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent_pid))
        finally:
            if stderr is not None:
                stderr.close()
        try:
            self._read_reply(0, self.start_timeout)
        except BaseException:
            self.close()
            raise

    def spawn(self, module: str, args: Sequence[str], env: Mapping[str, str],
              log_path: Path) -> ForkedChild:
        """Fork a child that runs ``module`` as ``python -m module args`` would.

        The child gets exactly ``env`` as its environment, stdin from /dev/null, and
        stdout and stderr appended to ``log_path``.
        """
        if self._popen is None or self._closed:
            raise ForkServerError("the fork server is not running (never started or closed)")
        with self._lock:
            rid = next(self._request_ids)
            self._send({"rid": rid, "op": "spawn", "module": module, "args": list(args),
                        "env": dict(env), "log": str(log_path), "cwd": os.getcwd()})
            reply = self._read_reply(rid, REPLY_TIMEOUT)
        if not reply.get("ok"):
            raise ForkServerError(f"the fork server could not start {module}: "
                                  f"{reply.get('error')}")
        child = ForkedChild(self, reply["pid"], self.status_dir / reply["status"],
                            [module, *args])
        self._children.append(child)
        return child

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server; any child still running is killed and reaped first.

        Idempotent. Exit codes of the children stay readable after closing.
        """
        if self._popen is None or self._closed:
            return
        self._closed = True
        popen = self._popen
        try:
            assert popen.stdin is not None
            popen.stdin.close()  # end of requests: the server kills what is left, exits
        except OSError:
            pass  # the server is gone already
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_server(popen)
        finally:
            if popen.stdout is not None:
                popen.stdout.close()
        for child in self._children:
            child.poll()  # remember exit codes before the status files go
        if self._owns_status_dir:
            shutil.rmtree(self.status_dir, ignore_errors=True)

    # --- the pipe protocol ---------------------------------------------------------
    def _send(self, request: dict[str, Any]) -> None:
        assert self._popen is not None and self._popen.stdin is not None
        data = json.dumps(request).encode() + b"\n"
        try:
            write_all(self._popen.stdin.fileno(), data)
        except (BrokenPipeError, ValueError):  # ValueError: the pipe was closed
            raise self._gone("is gone") from None

    def _read_reply(self, rid: int, timeout: float) -> dict[str, Any]:
        """The reply to request ``rid``; replies to requests that timed out are dropped."""
        assert self._popen is not None and self._popen.stdout is not None
        fd = self._popen.stdout.fileno()
        limit = timeout * timeout_scale()
        deadline = time.monotonic() + limit
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    raise ForkServerError(f"the fork server (pid {self.pid}) sent a garbled "
                                          f"reply: {line[:200]!r}") from None
                if reply.get("rid") == rid:
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise ForkServerError(f"the fork server (pid {self.pid}) did not answer "
                                      f"within {limit:.1f} s")
            if poller.poll(left * 1000):
                data = os.read(fd, 65536)
                if not data:
                    raise self._gone("closed its reply pipe")
                self._pending += data

    def _gone(self, what: str) -> ForkServerError:
        assert self._popen is not None
        try:
            code: int | None = self._popen.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        where = (f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                 if self.log_path is not None else "see its stderr")
        return ForkServerError(f"the fork server (pid {self._popen.pid}) {what}: "
                               f"{describe_exit(code)}; {where}")

    def _kill_server(self, popen: subprocess.Popen) -> None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            popen.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            raise ForkServerError(f"the fork server (pid {popen.pid}) survived SIGKILL "
                                  f"for {KILL_WAIT_SECONDS} s") from None


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])
