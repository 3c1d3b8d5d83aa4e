"""The supervisor: process wrappers, stop escalation, chaos signals, the event
collector, detached mode, and no orphans when the supervisor itself is killed.

The children are small Python programs run with ``sys.executable -c``. Every test
kills what it started in a ``finally`` (by process group, never by name), and no
test sleeps for an outcome: it waits for it with ``wait_for``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from emulator import envelope, transport
from emulator.collector import EventCollector
from emulator.errors import LnemuError
from emulator.supervisor import (
    ManagedProcess,
    ProcessDied,
    StopFailed,
    Supervisor,
    daemonize,
    pid_alive,
    read_pidfile,
)
from emulator.waiting import WaitTimeout, wait_for
from tests.prochelpers import kill_groups, proc_state

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CHILD_ENV = {"PYTHONPATH": str(REPO)}  # children import emulator from this tree

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux (/proc, PR_SET_PDEATHSIG)")

# A child that becomes ready after a moment and then idles until signalled.
# argv: data_dir, delay_seconds, mode ("default" | "ignore_term" | "graceful")
READY_CHILD = """
import json, os, signal, sys, time
from pathlib import Path
data_dir, delay, mode = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "graceful":
    def leave(signum, frame):
        with open(data_dir / "stopped", "a") as f:
            f.write(data_dir.name + "\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, leave)
print("starting up", flush=True)
time.sleep(delay)  # the child's own start-up time, not a test waiting
tmp = data_dir / "ready.tmp"
tmp.write_text(json.dumps({"pid": os.getpid(), "control": "ipc:///nowhere"}))
tmp.replace(data_dir / "ready")
while True:
    signal.pause()
"""

IDLE_CHILD = "import signal\nwhile True:\n    signal.pause()\n"


def ready_child(data_dir: Path, delay: float = 0.0, mode: str = "default") -> list[str]:
    return [PY, "-c", READY_CHILD, str(data_dir), str(delay), mode]




@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "run")
    try:
        yield sup
    finally:
        try:
            sup.close(timeout=2)
        finally:
            kill_groups(p.pid for p in sup.processes.values())


# --- ManagedProcess -----------------------------------------------------------

@pytest.mark.process
def test_wait_ready_returns_the_ready_file_not_a_stale_one(supervisor: Supervisor) -> None:
    data_dir = supervisor.run_dir / "alice"
    data_dir.mkdir(parents=True)
    (data_dir / "ready").write_text(json.dumps({"pid": 1, "control": "stale"}))
    proc = supervisor.add("alice", ready_child(data_dir, delay=0.2))
    assert proc.data_dir == data_dir
    proc.start()
    info = proc.wait_ready(timeout=10)
    assert info == {"pid": proc.pid, "control": "ipc:///nowhere"}
    assert proc.running and proc.returncode is None
    assert "starting up" in proc.log_tail()
    assert "starting alice" in proc.log_tail()  # the supervisor's header line


@pytest.mark.process
def test_wait_ready_raises_process_died_with_the_log_tail(supervisor: Supervisor) -> None:
    code = ("import sys\n"
            "for i in range(100):\n    print(f'line {i}')\n"
            "sys.stderr.write('boom: the config file is missing\\n')\n"
            "sys.exit(3)\n")
    proc = supervisor.add("broken", [PY, "-c", code])
    proc.start()
    with pytest.raises(ProcessDied) as info:
        proc.wait_ready(timeout=10)
    err = info.value
    assert err.returncode == 3 and err.name == "broken" and err.code == "process_died"
    assert "exit code 3" in str(err)
    assert "boom: the config file is missing" in str(err)
    assert "line 99" in err.log_tail and "line 50\n" not in err.log_tail
    assert len(err.log_tail.splitlines()) == 30
    assert supervisor.unexpected_deaths() == ["broken: exit code 3"]


@pytest.mark.process
def test_wait_ready_timeout_names_the_process_and_shows_its_log(
        supervisor: Supervisor) -> None:
    proc = supervisor.add("slow", ready_child(supervisor.run_dir / "slow", delay=60))
    proc.start()
    wait_for(lambda: "starting up" in proc.log_tail(), what="slow's first log line")
    with pytest.raises(WaitTimeout, match=r"\[slow\] to be ready(.|\n)*starting up"):
        proc.wait_ready(timeout=0.2)


@pytest.mark.process
def test_start_twice_and_wait_before_start_are_errors(supervisor: Supervisor) -> None:
    proc = supervisor.add("idle", [PY, "-c", IDLE_CHILD])
    with pytest.raises(LnemuError, match="never started"):
        proc.wait_ready(timeout=1)
    assert proc.stop() is None and proc.kill() is None
    proc.start()
    with pytest.raises(LnemuError, match="already running"):
        proc.start()
    with pytest.raises(LnemuError, match="exists already"):
        supervisor.add("idle", [PY, "-c", IDLE_CHILD])


@pytest.mark.process
def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(
        supervisor: Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    proc = supervisor.add("stubborn", ready_child(supervisor.run_dir / "stubborn",
                                                  mode="ignore_term"))
    proc.start()
    proc.wait_ready(timeout=10)  # SIGTERM is ignored from here on
    caplog.set_level(logging.WARNING, logger="supervisor")
    started = time.monotonic()
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 0.5 + 3.0
    assert "did not stop within 0.5 s; killing it" in caplog.text
    assert not proc.running and proc.expected_exit
    assert supervisor.unexpected_deaths() == []


@pytest.mark.process
def test_graceful_stop_returns_the_exit_code_and_is_idempotent(
        supervisor: Supervisor) -> None:
    proc = supervisor.add("polite", ready_child(supervisor.run_dir / "polite",
                                                mode="graceful"))
    proc.start()
    proc.wait_ready(timeout=10)
    assert proc.stop(timeout=5) == 0
    assert proc.stop(timeout=5) == 0
    assert proc.kill() == 0
    assert proc.returncode == 0 and proc.expected_exit


@pytest.mark.process
@linux_only
def test_stop_also_kills_helpers_left_in_the_process_group(supervisor: Supervisor) -> None:
    # The leader starts a helper (same process group) that ignores SIGTERM, then
    # exits politely on SIGTERM itself; stop() must not leave the helper behind.
    code = textwrap.dedent("""
        import json, os, signal, subprocess, sys, time
        from pathlib import Path
        data_dir = Path(sys.argv[1])
        helper_code = ("import signal, sys\\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                       "print('armed', flush=True)\\n"
                       "while True:\\n    signal.pause()\\n")
        helper = subprocess.Popen([sys.executable, "-c", helper_code], stdout=subprocess.PIPE)
        assert helper.stdout.readline() == b"armed\\n"
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        tmp = data_dir / "ready.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "helper": helper.pid}))
        tmp.replace(data_dir / "ready")
        while True:
            signal.pause()
    """)
    proc = supervisor.add("leader", [PY, "-c", code, str(supervisor.run_dir / "leader")])
    proc.start()
    helper = proc.wait_ready(timeout=10)["helper"]
    assert os.getpgid(helper) == proc.pid
    assert proc.stop(timeout=5) == 0
    wait_for(lambda: not pid_alive(helper), timeout=5, what=f"helper {helper} to die")


@pytest.mark.process
@linux_only
def test_pause_and_resume(supervisor: Supervisor) -> None:
    proc = supervisor.add("sleepy", ready_child(supervisor.run_dir / "sleepy"))
    proc.start()
    proc.wait_ready(timeout=10)
    proc.pause()
    wait_for(lambda: proc_state(proc.pid) == "T", timeout=5, what="sleepy to be stopped")
    assert proc.running
    proc.resume()
    wait_for(lambda: proc_state(proc.pid) != "T", timeout=5, what="sleepy to run again")
    # A paused process still stops promptly: stop() sends SIGCONT after SIGTERM.
    proc.pause()
    wait_for(lambda: proc_state(proc.pid) == "T", timeout=5, what="sleepy to be stopped")
    started = time.monotonic()
    assert proc.stop(timeout=5) == -signal.SIGTERM
    assert time.monotonic() - started < 4


@pytest.mark.process
def test_kill_is_a_deliberate_death_a_crash_is_not(supervisor: Supervisor) -> None:
    victim = supervisor.add("victim", ready_child(supervisor.run_dir / "victim"))
    crasher = supervisor.add("crasher", [PY, "-c", "import sys; sys.exit(2)"])
    supervisor.start_all()
    victim.wait_ready(timeout=10)
    assert victim.kill() == -signal.SIGKILL
    assert victim.expected_exit and not victim.running
    wait_for(lambda: not crasher.running, timeout=10, what="crasher to exit")
    assert supervisor.unexpected_deaths() == ["crasher: exit code 2"]
    # Stopping a process that already died does not hide its death.
    assert supervisor.stop_all(timeout=5) == {"crasher": 2, "victim": -signal.SIGKILL}
    assert supervisor.unexpected_deaths() == ["crasher: exit code 2"]


# --- Supervisor -----------------------------------------------------------------

@pytest.mark.process
def test_stop_all_stops_the_first_started_last(supervisor: Supervisor) -> None:
    names = ["chain", "alice", "bob"]
    for name in names:
        supervisor.add(name, ready_child(supervisor.run_dir / name, mode="graceful"))
    supervisor.start_all()
    for proc in supervisor.processes.values():
        proc.wait_ready(timeout=10)
    assert supervisor.stop_all(timeout=5) == {"bob": 0, "alice": 0, "chain": 0}
    stopped = {n: (supervisor.run_dir / n / "stopped").stat().st_mtime_ns for n in names}
    assert stopped["chain"] > max(stopped["alice"], stopped["bob"])
    assert supervisor.unexpected_deaths() == []


@pytest.mark.process
def test_stop_all_tries_every_process_before_raising(supervisor: Supervisor) -> None:
    procs = [supervisor.add(n, [PY, "-c", IDLE_CHILD]) for n in ("a", "b", "c")]
    supervisor.start_all()

    def refuse(timeout: float = 10.0) -> int | None:
        raise StopFailed("b is stuck")

    procs[1].stop = refuse  # type: ignore[method-assign]
    procs[1].ask_to_stop = lambda: None  # type: ignore[method-assign]  # b ignores SIGTERM
    try:
        with pytest.raises(StopFailed, match="b is stuck"):
            supervisor.stop_all(timeout=5)
        assert not procs[0].running and not procs[2].running
        assert procs[1].running
    finally:
        del procs[1].stop  # the fixture's teardown stops it for real


@pytest.mark.process
def test_context_manager_stops_everything_even_on_error(tmp_path: Path) -> None:
    pgids: list[int | None] = []
    try:
        with pytest.raises(RuntimeError, match="scenario failed"):
            with Supervisor(tmp_path / "run") as sup:
                procs = [sup.add(n, [PY, "-c", IDLE_CHILD]) for n in ("x", "y")]
                sup.start_all()
                pgids.extend(p.pid for p in procs)
                socket_dir = sup.socket_dir
                raise RuntimeError("scenario failed")
        assert all(not p.running for p in procs)
        assert [p.returncode for p in procs] == [-signal.SIGTERM, -signal.SIGTERM]
        assert not socket_dir.exists()
        assert (tmp_path / "run" / "x" / "process.log").exists()
    finally:
        kill_groups(pgids)


# --- EventCollector ---------------------------------------------------------------

EVENT_CHILD = """
import sys
import zmq
from emulator import envelope, transport
ctx = zmq.Context()
sock = transport.pusher(ctx, sys.argv[1])
for i in range(int(sys.argv[2])):
    sock.send(envelope.pack_event(1.5 + i, "peer child", "tick", {"seq": i, "raw": b"\\x01\\xff"}))
sock.send(b"\\xc1 not msgpack")
sock.send(envelope.pack_request("getinfo", {}, 1))  # a valid message, but not an event
sock.setsockopt(zmq.LINGER, 10_000)  # deliver everything queued before exiting
sock.close()
ctx.term()
"""


@pytest.mark.process
def test_collector_writes_every_event_a_child_sends(supervisor: Supervisor) -> None:
    n_events = 1000
    proc = supervisor.add("emitter", [PY, "-c", EVENT_CHILD, supervisor.events_endpoint,
                                      str(n_events)], env=CHILD_ENV)
    proc.start()
    collector = supervisor.collector
    wait_for(lambda: collector.count == n_events and collector.malformed == 2,
             timeout=20, what=f"{n_events} events and 2 malformed messages")
    wait_for(lambda: not proc.running, timeout=10, what="the emitter to exit")
    assert proc.returncode == 0, proc.log_tail()
    assert len(collector.events(kind="tick", proc="peer child")) == n_events
    assert collector.events(proc="peer other") == []
    supervisor.close()

    lines = (supervisor.run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == n_events
    assert [e["data"]["seq"] for e in events] == list(range(n_events))
    assert events[0] == {"ts": 1.5, "proc": "peer child", "kind": "tick",
                         "data": {"seq": 0, "raw": "01ff"}}


def test_collector_keeps_the_recent_events_and_filters_them(tmp_path: Path) -> None:
    sock_dir = transport.short_socket_dir()
    ctx = zmq.Context()
    collector = EventCollector(transport.ipc_endpoint(sock_dir, "events"),
                               tmp_path / "events.jsonl", keep=5)
    push = None
    try:
        collector.start()
        push = transport.pusher(ctx, collector.endpoint)
        for i in range(8):
            kind = "payment" if i % 2 else "block"
            push.send(envelope.pack_event(float(i), f"peer p{i % 3}", kind, {"i": i}))
        wait_for(lambda: collector.count == 8, timeout=10, what="8 events")
    finally:
        if push is not None:
            push.close(linger=0)
        ctx.term()
        collector.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert [e["data"]["i"] for e in collector.events()] == [3, 4, 5, 6, 7]
    assert [e["data"]["i"] for e in collector.events(kind="payment")] == [3, 5, 7]
    assert [e["data"]["i"] for e in collector.events(kind="block", proc="peer p0")] == [6]
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 8
    collector.stop()  # idempotent


def test_collector_that_cannot_bind_fails_loudly(tmp_path: Path) -> None:
    collector = EventCollector(f"ipc://{tmp_path}/no/such/dir/events", tmp_path / "e.jsonl")
    with pytest.raises(LnemuError, match="could not start"):
        collector.start()


# --- the supervisor's own death, and detached mode ----------------------------------

SUPERVISOR_SCRIPT = """
import json, signal, sys
from pathlib import Path
from emulator.supervisor import Supervisor
sup = Supervisor(Path(sys.argv[1]))
for i in range(3):
    sup.add(f"sleeper{i}", [sys.executable, "-c", "import signal; signal.pause()"])
sup.start_all()
print(json.dumps({"pids": [p.pid for p in sup.processes.values()],
                  "socket_dir": str(sup.socket_dir)}), flush=True)
while True:
    signal.pause()
"""


def read_json_line(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text) if text.endswith("\n") else None


@pytest.mark.process
@linux_only
def test_killing_the_supervisor_leaves_no_child_alive(tmp_path: Path) -> None:
    out_path = tmp_path / "supervisor.out"
    children: list[int] = []
    socket_dir = None
    with open(out_path, "wb") as out:
        sup = subprocess.Popen([PY, "-c", SUPERVISOR_SCRIPT, str(tmp_path / "run")],
                               stdout=out, stderr=subprocess.STDOUT, env={**os.environ,
                               **CHILD_ENV}, start_new_session=True)
    try:
        info = wait_for(lambda: read_json_line(out_path), timeout=20,
                        what="the supervisor to print its children")
        children, socket_dir = info["pids"], info["socket_dir"]
        assert len(children) == 3 and all(pid_alive(pid) for pid in children)
        os.killpg(sup.pid, signal.SIGKILL)
        sup.wait(timeout=10)
        wait_for(lambda: not any(pid_alive(pid) for pid in children), timeout=10,
                 what=f"children {children} to die with their supervisor")
    finally:
        kill_groups([sup.pid, *children])
        if sup.poll() is None:
            sup.wait(timeout=10)
        if socket_dir:  # its owner was killed, so nobody else removes it
            shutil.rmtree(socket_dir, ignore_errors=True)


DAEMON_SCRIPT = """
import json, logging, signal, sys
from pathlib import Path
from emulator.supervisor import Supervisor, daemonize, install_signal_handlers
run = Path(sys.argv[1])
if not daemonize(run / "supervisor.pid", run / "supervisor.log"):
    print("detached", flush=True)
    sys.exit(0)
logging.basicConfig(level=logging.INFO)
sup = Supervisor(run)
install_signal_handlers(sup)
child = sup.add("sleeper", [sys.executable, "-c", "import signal; signal.pause()"])
child.start()
tmp = run / "info.tmp"
tmp.write_text(json.dumps({"child": child.pid, "socket_dir": str(sup.socket_dir)}) + "\\n")
tmp.replace(run / "info.json")
print("daemon up", flush=True)
while True:
    signal.pause()
"""


@pytest.mark.process
@linux_only
def test_daemon_detaches_and_stops_its_children_on_sigterm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    daemon_pid = child = socket_dir = None
    try:
        caller = subprocess.run([PY, "-c", DAEMON_SCRIPT, str(run)], capture_output=True,
                                env={**os.environ, **CHILD_ENV}, timeout=30,
                                start_new_session=True)
        assert caller.returncode == 0, caller.stderr.decode()
        assert caller.stdout == b"detached\n"  # the daemon's output goes to its log
        daemon_pid = read_pidfile(run / "supervisor.pid")
        assert daemon_pid is not None and pid_alive(daemon_pid)
        assert os.getsid(daemon_pid) != os.getsid(0)
        info = wait_for(lambda: read_json_line(run / "info.json"), timeout=20,
                        what="the daemon to start its child")
        child, socket_dir = info["child"], info["socket_dir"]
        assert pid_alive(child)

        os.kill(daemon_pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(daemon_pid), timeout=15, what="the daemon to exit")
        assert not pid_alive(child)  # stopped before the daemon exited
        assert not (run / "supervisor.pid").exists()
        assert not Path(socket_dir).exists()
        log_text = (run / "supervisor.log").read_text()
        assert "daemon up" in log_text and "got SIGTERM" in log_text
    finally:
        if daemon_pid is not None and pid_alive(daemon_pid):
            kill_groups([os.getpgid(daemon_pid)])
        kill_groups([child])
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


def test_daemonize_refuses_when_the_pidfile_names_a_live_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "supervisor.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    with pytest.raises(LnemuError, match="already running") as info:
        daemonize(pidfile, tmp_path / "supervisor.log")
    assert info.value.code == "already_running"


def test_pidfile_and_liveness_helpers(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    assert read_pidfile(pidfile) is None
    pidfile.write_text("garbage")
    assert read_pidfile(pidfile) is None
    pidfile.write_text("0\n")
    assert read_pidfile(pidfile) is None
    pidfile.write_text(f"{os.getpid()}\n")
    assert read_pidfile(pidfile) == os.getpid()
    assert pid_alive(os.getpid())


@pytest.mark.process
@linux_only
def test_pid_alive_counts_a_zombie_as_dead(tmp_path: Path) -> None:
    proc = ManagedProcess("quick", [PY, "-c", "pass"], tmp_path / "quick")
    proc.start()
    try:
        # Not reaped yet: the child is a zombie once it has exited.
        wait_for(lambda: proc_state(proc.pid) == "Z", timeout=10, what="a zombie")
        assert not pid_alive(proc.pid)
    finally:
        proc.kill()
        kill_groups([proc.pid])
