"""Starting, watching and stopping lnemu's processes, and collecting their events.

A :class:`ManagedProcess` wraps one OS process the way Bitcoin Core's ``TestNode``
does: ``start()``, ``wait_ready()`` (which checks ``poll()`` first and raises with
the tail of the process's log if it died), ``stop()`` that asks, waits, then kills,
and exit codes for the teardown checks. Each process runs in its own process group
and, on Linux, is killed by the kernel when the supervisor dies
(``PR_SET_PDEATHSIG``), so no orphan outlives a crashed run.

The :class:`Supervisor` holds the processes of one run directory and an
:class:`~emulator.collector.EventCollector` (the PULL end of the events socket)
that writes ``events.jsonl``. :func:`daemonize` detaches a supervisor for ``lnemu up``.

With ``Supervisor(..., forkserver=True)``, processes started as
``sys.executable -m MODULE ...`` are forked by an
:class:`~emulator.forkserver.ForkServer` (modules imported once, pages shared)
instead of being executed afresh; everything else about them stays the same.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator import transport
from emulator.collector import EVENTS_FILE, EventCollector
from emulator.errors import LnemuError
from emulator.waiting import WaitTimeout, wait_for

if TYPE_CHECKING:  # emulator.forkserver imports this module
    from emulator.forkserver import ForkedChild, ForkServer

log = logging.getLogger("supervisor")

READY_FILE = "ready"
LOG_FILE = "process.log"
FORK_SERVER_LOG = "forkserver.log"
KILL_WAIT_SECONDS = 5.0  # after SIGKILL a process is gone unless stuck in the kernel
TAIL_BYTES = 64 * 1024

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_start_sequence = itertools.count(1)


class ProcessDied(LnemuError):
    """A managed process exited while it was expected to run (or to become ready)."""

    code = "process_died"

    def __init__(self, message: str, *, name: str = "", returncode: int | None = None,
                 log_tail: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail


class StopFailed(LnemuError):
    """A process survived SIGKILL (stuck in the kernel) or stopping it failed."""

    code = "stop_failed"


def describe_exit(returncode: int | None) -> str:
    """Human words for a ``Popen.returncode``: ``exit code 3`` or ``killed by SIGKILL``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# --- parent-death signal (Linux) ---------------------------------------------------

def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Looked up once here: the child between fork and exec should do as little as possible.
_prctl = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: get SIGKILL when the supervisor dies.

    The kernel sends the signal when the *thread* that forked us exits, so start
    processes from a long-lived thread (the main thread), not from a worker pool.
    """
    if _prctl is None:
        return
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    # The supervisor may have died before prctl took effect: then nobody would kill us.
    if os.getppid() != parent_pid:
        os._exit(1)


# --- one process ----------------------------------------------------------------

class ManagedProcess:
    """One OS process in its own process group, with a data directory and a log.

    Given a ``forkserver``, a ``sys.executable -m MODULE ...`` command is forked by it
    rather than executed; the process behaves the same either way.
    """

    def __init__(self, name: str, argv: list[str], data_dir: Path,
                 env: dict[str, str] | None = None,
                 forkserver: ForkServer | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.data_dir = Path(data_dir)
        self.env = dict(env or {})
        self.log_path = self.data_dir / LOG_FILE
        self.ready_path = self.data_dir / READY_FILE
        self.expected_exit = False  # set when we stopped or killed it on purpose
        self.paused = False  # frozen by pause(): it answers nothing until resume()
        self.start_seq = 0  # order of the last start() among all processes
        self.forkserver = forkserver
        self._popen: subprocess.Popen | ForkedChild | None = None
        self._stop_asked = False

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} {describe_exit(self.returncode)}>"

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), once started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while running."""
        return self._popen.poll() if self._popen is not None else None

    @property
    def running(self) -> bool:
        """True while the process has been started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        """Start the process; its stdout and stderr go to ``process.log``.

        Call it from a long-lived thread: on Linux the child is killed when the
        thread that started it exits (that is how PR_SET_PDEATHSIG works).
        """
        if self.running:
            raise LnemuError(f"[{self.name}] is already running (pid {self.pid})",
                             code="already_running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)  # a stale ready file would lie
        self.paused = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        parent_pid = os.getpid()
        forked = self.forkserver is not None and self._runs_a_module()
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- lnemu: starting {self.name} at "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {self.argv}\n".encode())
            log_file.flush()
            if forked:
                self._popen = self.forkserver.spawn(self.argv[2], self.argv[3:], env,
                                                    self.log_path)
            else:
                self._popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                    preexec_fn=lambda: _die_with_parent(parent_pid),
                )
        self.expected_exit = False
        self._stop_asked = False
        self.start_seq = next(_start_sequence)
        log.info("[%s] started, pid %d%s", self.name, self._popen.pid,
                 " (forked)" if forked else "")

    def _runs_a_module(self) -> bool:
        """True for ``sys.executable -m MODULE ...``: what a fork server can start."""
        return len(self.argv) > 2 and self.argv[:2] == [sys.executable, "-m"]

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the ready file and return its JSON; raise ProcessDied if it exited."""
        popen = self._require_started()

        def ready() -> dict[str, Any] | None:
            if popen.poll() is not None:
                tail = self.log_tail(30)
                raise ProcessDied(
                    f"[{self.name}] {describe_exit(popen.returncode)} before it was ready; "
                    f"last lines of {self.log_path}:\n{tail}",
                    name=self.name, returncode=popen.returncode, log_tail=tail)
            try:
                return json.loads(self.ready_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return None  # the file is written atomically; not there yet

        try:
            return wait_for(ready, timeout, what=f"[{self.name}] to be ready")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}; last lines of {self.log_path}:\n"
                              f"{self.log_tail(30)}") from None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the process group to stop (SIGTERM), wait, then SIGKILL it; the exit code.

        Idempotent; a process that already exited keeps its exit code and is not
        marked as stopped on purpose (so its death still counts as unexpected).
        """
        if self._popen is None:
            return None
        popen = self._popen
        if popen.poll() is not None:
            return popen.returncode
        self.ask_to_stop()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("[%s] did not stop within %.1f s; killing it", self.name, timeout)
            self._signal_group(signal.SIGKILL)
            self._wait_killed(popen)
        # Our pid stays reserved as the group id while any member lives, so this
        # reaches only stragglers of our own group (helpers that ignored SIGTERM).
        self._signal_group(signal.SIGKILL)
        log.info("[%s] stopped: %s", self.name, describe_exit(popen.returncode))
        return popen.returncode

    def ask_to_stop(self) -> None:
        """Send SIGTERM once (and SIGCONT: a paused process acts on it only then);
        ``stop()`` waits for the exit."""
        if self._stop_asked or not self.running:
            return
        self._stop_asked = True
        self.expected_exit = True
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)

    def kill(self) -> int | None:
        """SIGKILL the whole process group (a crash fault) and reap it; the exit code."""
        if self._popen is None:
            return None
        popen = self._popen
        if popen.poll() is None:
            self.expected_exit = True
            self._signal_group(signal.SIGKILL)
            self._wait_killed(popen)
            log.info("[%s] killed", self.name)
        return popen.returncode

    def pause(self) -> None:
        """Freeze the process group (SIGSTOP): alive but unresponsive."""
        self._signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused process group run again (SIGCONT)."""
        self._signal_group(signal.SIGCONT)
        self.paused = False

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the process's log ('' if there is none)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return ""
        lines = data.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:]) if n > 0 else ""

    def _require_started(self) -> subprocess.Popen | ForkedChild:
        if self._popen is None:
            raise LnemuError(f"[{self.name}] was never started", code="not_started")
        return self._popen

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id is our pid (start_new_session). While the leader is unreaped
        # (running or a zombie) the id cannot be reused.
        popen = self._require_started()
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass  # the whole group is gone already

    def _wait_killed(self, popen: subprocess.Popen | ForkedChild) -> None:
        try:
            popen.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            raise StopFailed(f"[{self.name}] pid {popen.pid} survived SIGKILL for "
                             f"{KILL_WAIT_SECONDS} s (stuck in the kernel?)") from None


# --- the supervisor ---------------------------------------------------------------

class Supervisor:
    """The processes of one run directory, plus the event collector they report to."""

    def __init__(self, run_dir: Path, keep_events: int = 10_000,
                 forkserver: bool = False) -> None:
        """``forkserver``: fork ``python -m`` processes from one preloaded server."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, ManagedProcess] = {}
        self.socket_dir = transport.short_socket_dir()
        self.events_endpoint = transport.ipc_endpoint(self.socket_dir, "events")
        self.collector = EventCollector(self.events_endpoint, self.run_dir / EVENTS_FILE,
                                        keep=keep_events)
        self.forkserver: ForkServer | None = None
        self._closed = False
        try:
            if forkserver:  # before the collector's thread: fork no threads
                self.forkserver = self._start_forkserver()
            self.collector.start()
        except BaseException:
            if self.forkserver is not None:
                self.forkserver.close()
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            raise

    def _start_forkserver(self) -> ForkServer:
        from emulator.forkserver import ForkServer  # it imports this module

        server = ForkServer(status_dir=self.socket_dir / "forkserver",
                            log_path=self.run_dir / FORK_SERVER_LOG)
        server.start()
        log.info("fork server started, pid %d", server.pid)
        return server

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def endpoint(self, name: str) -> str:
        """An ipc endpoint in the supervisor's short socket directory."""
        return transport.ipc_endpoint(self.socket_dir, name)

    def add(self, name: str, argv: list[str], env: dict[str, str] | None = None
            ) -> ManagedProcess:
        """Register a process whose data directory is ``run_dir/name``; not started yet."""
        if name in self.processes:
            raise LnemuError(f"a process named {name!r} exists already", code="duplicate")
        proc = ManagedProcess(name, argv, self.run_dir / name, env, self.forkserver)
        self.processes[name] = proc
        return proc

    def start_all(self) -> None:
        """Start every registered process that is not running, in the order added."""
        for proc in self.processes.values():
            if not proc.running:
                proc.start()

    def stop_all(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every process; their exit codes by name.

        The first one started (the chain, which the others use) stops last; all the
        others are asked at once and then waited for, so hundreds of peers stop
        together rather than one after another. Every process is tried before the
        first failure is raised.
        """
        codes: dict[str, int | None] = {}
        failures: list[BaseException] = []
        ordered = sorted(self.processes.values(), key=lambda p: p.start_seq, reverse=True)
        for proc in ordered[:-1]:
            proc.ask_to_stop()
        for proc in ordered:
            try:
                codes[proc.name] = proc.stop(timeout)
            except Exception as exc:
                log.error("[%s] could not be stopped: %s", proc.name, exc)
                failures.append(exc)
        if failures:
            raise failures[0]
        return codes

    def unexpected_deaths(self) -> list[str]:
        """Processes that exited without being stopped or killed on purpose."""
        return [f"{p.name}: {describe_exit(p.returncode)}"
                for p in self.processes.values()
                if p.pid is not None and not p.running and not p.expected_exit]

    def close(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every process, then the fork server and the collector, and remove the
        socket directory."""
        try:
            return self.stop_all(timeout)
        finally:
            if not self._closed:
                self._closed = True
                try:
                    if self.forkserver is not None:
                        self.forkserver.close(timeout)
                finally:
                    try:
                        self.collector.stop()
                    finally:
                        shutil.rmtree(self.socket_dir, ignore_errors=True)


def install_signal_handlers(supervisor: Supervisor) -> None:
    """On SIGTERM or SIGINT: stop every process, close the supervisor, and exit."""

    def handle(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # one shutdown at a time
        log.info("got %s; stopping all processes", signal.Signals(signum).name)
        code = 128 + signum
        try:
            supervisor.close()
        except Exception:
            log.exception("shutdown after %s failed", signal.Signals(signum).name)
            code = 1
        raise SystemExit(code)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# --- detached mode (lnemu up) -------------------------------------------------------

def read_pidfile(path: Path) -> int | None:
    """The pid in a pidfile, or None if it is missing or unreadable."""
    try:
        pid = int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process; a zombie (dead, not yet reaped) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but belongs to someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # without /proc, trust kill(0)
    except OSError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]  # the command name may hold ')'
    return state not in ("Z", "X")


def _write_pidfile(path: Path, pid: int) -> None:
    tmp = path.with_name(f"{path.name}.{pid}.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def _remove_own_pidfile(path: Path, pid: int) -> None:
    if read_pidfile(path) == pid:
        path.unlink(missing_ok=True)


def redirect_stdio(log_path: str | Path) -> None:
    """File descriptors 0 from /dev/null, 1 and 2 appended to ``log_path``."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def daemonize(pidfile: Path, log_path: Path, timeout: float = 10.0) -> bool:
    """Detach into a daemon; True in the daemon, False in the caller once it is up.

    Double fork and ``setsid`` (no controlling terminal, not our child), stdin from
    /dev/null, stdout and stderr appended to ``log_path``, the pid written atomically
    to ``pidfile`` (removed again when the daemon exits). Call it before creating
    threads or ZeroMQ contexts: they do not survive a fork.
    """
    pidfile, log_path = Path(pidfile), Path(log_path)
    running = read_pidfile(pidfile)
    if running is not None and pid_alive(running):
        raise LnemuError(f"already running as pid {running} ({pidfile})", code="already_running")
    pidfile.unlink(missing_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child > 0:
        _, status = os.waitpid(child, 0)  # the middle process exits after the second fork
        if os.waitstatus_to_exitcode(status) != 0:
            raise LnemuError(f"could not detach: {describe_exit(os.waitstatus_to_exitcode(status))}",
                             code="daemonize_failed")
        wait_for(lambda: read_pidfile(pidfile), timeout, what=f"daemon pidfile {pidfile}")
        return False
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        redirect_stdio(log_path)
        pid = os.getpid()
        _write_pidfile(pidfile, pid)
        atexit.register(_remove_own_pidfile, pidfile, pid)
    except BaseException:
        os._exit(1)  # never return into the caller's code from a failed fork
    return True
