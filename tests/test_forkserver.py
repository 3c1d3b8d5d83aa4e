"""The fork server: children forked from preloaded modules behave like Popen children.

Most tests fork ``python -m tests.forkchild`` (see that module) from a server that
preloads almost nothing; two start the real thing (the default preload list) under a
:class:`Supervisor` and a :class:`Network`. Every test kills what it started in a
``finally`` (by process group, never by name), and waits with ``wait_for``.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import service as service_module
from emulator.forkserver import LOST_EXIT_CODE, ForkedChild, ForkServer, ForkServerError
from emulator.network import Network, PeerPlan
from emulator.service import Service
from emulator.supervisor import ManagedProcess, ProcessDied, Supervisor, pid_alive
from emulator.waiting import wait_for
from tests.prochelpers import kill_groups, proc_state

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CHILD = "tests.forkchild"
CHILD_ENV = {"PYTHONPATH": str(REPO)}  # the child imports tests.forkchild from this tree
LIGHT_PRELOAD = ["json"]  # the default list costs a second of CPU; most tests need none

pytestmark = [
    pytest.mark.process,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="needs Linux (/proc, PR_SET_PDEATHSIG)"),
]




def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def read_ready(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "ready").read_text())
    except FileNotFoundError:
        return None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    """A started fork server with a light preload; teardown leaves no process behind."""
    fork_server = ForkServer(LIGHT_PRELOAD, log_path=tmp_path / "forkserver.log")
    fork_server.start()
    try:
        yield fork_server
    finally:
        kill_groups(child.pid for child in fork_server.children if child.poll() is None)
        try:
            fork_server.close(timeout=5)
        finally:
            if fork_server.alive:
                kill_groups([fork_server.pid])


def spawn_serving(server: ForkServer, data_dir: Path, mode: str = "default",
                  **env: str) -> tuple[ForkedChild, dict]:
    """Fork a ``serve`` child and wait for its ready file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    child = server.spawn(CHILD, ["serve", str(data_dir), mode], {**CHILD_ENV, **env},
                         data_dir / "process.log")
    info = wait_for(lambda: read_ready(data_dir), timeout=10, what=f"{data_dir.name} ready")
    return child, info


# --- ForkServer and ForkedChild ------------------------------------------------------

def test_child_has_its_own_group_and_exactly_the_requested_env(
        server: ForkServer, tmp_path: Path) -> None:
    child, info = spawn_serving(server, tmp_path / "c1", FORKCHILD_MARK="m1")
    assert info["pid"] == child.pid == info["pgid"] == info["sid"]
    assert info["ppid"] == server.pid  # forked by the server, not started afresh
    assert info["argv"] == ["serve", str(tmp_path / "c1"), "default"]
    assert info["name"] == "__main__"
    assert info["mark"] == "m1" and info["home"] is None  # the env is replaced, not merged
    assert child.poll() is None and child.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.05)
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert child.returncode == -signal.SIGKILL and child.poll() == -signal.SIGKILL


@pytest.mark.parametrize("unbuffered", [True, False])
def test_exit_codes_and_output_reach_the_log(server: ForkServer, tmp_path: Path,
                                             unbuffered: bool) -> None:
    env = {**CHILD_ENV, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})}
    children = {}
    for argv in (["exit", "0"], ["exit", "3"], ["raise"]):
        log_path = tmp_path / f"{'-'.join(argv)}.log"
        children[log_path] = server.spawn(CHILD, argv, env, log_path)
    codes = {path.stem: child.wait(timeout=10) for path, child in children.items()}
    assert codes == {"exit-0": 0, "exit-3": 3, "raise": 1}
    for path in children:
        text = path.read_text()
        if path.stem == "raise":
            assert "RuntimeError: boom from forkchild" in text
            assert "Traceback (most recent call last)" in text
        else:  # as with python: buffered stdout reaches the file only at exit
            expected = ["to stdout", "to stderr"] if unbuffered else ["to stderr", "to stdout"]
            assert text.splitlines() == expected


def test_a_child_that_cannot_be_set_up_is_refused_and_the_server_goes_on(
        server: ForkServer, tmp_path: Path) -> None:
    with pytest.raises(ForkServerError, match=r"could not start tests.forkchild.*"
                                              r"FileNotFoundError") as info:
        server.spawn(CHILD, ["exit", "0"], CHILD_ENV, tmp_path / "no" / "such" / "x.log")
    assert info.value.code == "forkserver"
    child = server.spawn(CHILD, ["exit", "5"], CHILD_ENV, tmp_path / "ok.log")
    assert child.wait(timeout=10) == 5


def test_killing_the_server_kills_its_children(server: ForkServer, tmp_path: Path) -> None:
    children = [spawn_serving(server, tmp_path / name)[0] for name in ("c1", "c2")]
    os.killpg(server.pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(c.pid) for c in children), timeout=10,
             what="the children to die with their fork server (PDEATHSIG)")
    assert [c.poll() for c in children] == [LOST_EXIT_CODE, LOST_EXIT_CODE]
    with pytest.raises(ForkServerError, match=r"fork server \(pid \d+\) is gone: "
                                              r"killed by SIGKILL"):
        server.spawn(CHILD, ["exit", "0"], CHILD_ENV, tmp_path / "late.log")


def test_closing_the_server_kills_children_left_running(server: ForkServer,
                                                        tmp_path: Path) -> None:
    child, _ = spawn_serving(server, tmp_path / "c1")
    status_dir = server.status_dir
    server.close(timeout=10)
    assert not pid_alive(child.pid) and not server.alive
    assert child.poll() == -signal.SIGKILL  # recorded by the server before it left
    assert not status_dir.exists()
    assert "killing 1 child(ren) still running" in (tmp_path / "forkserver.log").read_text()
    with pytest.raises(ForkServerError, match="not running"):
        server.spawn(CHILD, ["exit", "0"], CHILD_ENV, tmp_path / "late.log")


def test_a_preload_that_does_not_import_fails_start(tmp_path: Path) -> None:
    fork_server = ForkServer(["json", "no_such_module_for_lnemu"],
                             log_path=tmp_path / "forkserver.log")
    try:
        with pytest.raises(ForkServerError, match=r"(?s)exit code 1.*No module named "
                                                  r"'no_such_module_for_lnemu'"):
            fork_server.start()
        assert not fork_server.alive
    finally:
        if fork_server.alive:
            kill_groups([fork_server.pid])


# --- through ManagedProcess and Supervisor ---------------------------------------------

@pytest.mark.parametrize(("mode", "code"), [("default", -signal.SIGTERM), ("graceful", 0),
                                            ("ignore_term", -signal.SIGKILL)])
def test_managed_process_pauses_resumes_and_stops(server: ForkServer, tmp_path: Path,
                                                  mode: str, code: int) -> None:
    data_dir = tmp_path / "sleepy"
    proc = ManagedProcess("sleepy", [PY, "-m", CHILD, "serve", str(data_dir), mode],
                          data_dir, env=CHILD_ENV, forkserver=server)
    proc.start()
    try:
        assert proc.wait_ready(timeout=10)["ppid"] == server.pid
        proc.pause()
        wait_for(lambda: proc_state(proc.pid) == "T", timeout=5, what="sleepy to be stopped")
        assert proc.running
        proc.resume()
        wait_for(lambda: proc_state(proc.pid) != "T", timeout=5, what="sleepy to run again")
        proc.pause()  # stop() must reach a paused process too
        wait_for(lambda: proc_state(proc.pid) == "T", timeout=5, what="sleepy to be stopped")
        assert proc.stop(timeout=0.5) == code
        assert not proc.running and proc.returncode == code and proc.expected_exit
        assert not pid_alive(proc.pid)
        assert "serving" in proc.log_tail() and "starting sleepy" in proc.log_tail()
    finally:
        proc.kill()


def test_managed_process_that_dies_early_raises_process_died(server: ForkServer,
                                                              tmp_path: Path) -> None:
    proc = ManagedProcess("broken", [PY, "-m", CHILD, "exit", "3"], tmp_path / "broken",
                          env=CHILD_ENV, forkserver=server)
    proc.start()
    with pytest.raises(ProcessDied, match=r"(?s)exit code 3 before it was ready.*to stderr"):
        proc.wait_ready(timeout=10)
    assert proc.returncode == 3 and proc.kill() == 3


def test_supervisor_with_a_fork_server_leaves_no_process_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    pids: list[int | None] = []
    sup = Supervisor(run, forkserver=True)
    try:
        assert sup.forkserver is not None and sup.forkserver.alive
        pids.append(sup.forkserver.pid)
        polite = sup.add("polite", [PY, "-m", CHILD, "serve", str(run / "polite"),
                                    "graceful"], env=CHILD_ENV)
        blunt = sup.add("blunt", [PY, "-m", CHILD, "serve", str(run / "blunt"), "default"],
                        env=CHILD_ENV)
        execed = sup.add("execed", [PY, "-c", "import signal; signal.pause()"])
        sup.start_all()
        pids.extend(p.pid for p in sup.processes.values())
        for proc in (polite, blunt):
            assert proc.wait_ready(timeout=10)["ppid"] == sup.forkserver.pid
        assert parent_of(execed.pid) == os.getpid()  # not a module: started with Popen
        socket_dir = sup.socket_dir
        codes = sup.close(timeout=5)
        assert codes == {"execed": -signal.SIGTERM, "blunt": -signal.SIGTERM, "polite": 0}
        assert not any(pid_alive(pid) for pid in pids if pid is not None)
        assert not socket_dir.exists() and (run / "forkserver.log").exists()
        assert sup.unexpected_deaths() == []
    finally:
        try:
            sup.close(timeout=2)
        finally:
            kill_groups(pids)


def test_network_with_a_fork_server_answers_and_stops_cleanly(tmp_path: Path) -> None:
    net = Network(tmp_path / "net", forkserver=True)
    pids: list[int | None] = [net.sup.forkserver.pid if net.sup.forkserver else None]
    try:
        net.start([PeerPlan("alice", 100_000, ("bob",)), PeerPlan("bob")])
        pids.extend(p.pid for p in net.sup.processes.values())
        for name in ("alice", "bob"):
            info = net.rpc(name).call("getinfo")
            assert info["id"] == net.node_id(name)
            assert parent_of(net.process(name).pid) == net.sup.forkserver.pid
        assert net.rpc("alice").call("getinfo")["confirmed_sat"] == 100_000
        net.wait_connected()
        assert net.sup.unexpected_deaths() == []
        assert net.stop() == {"bob": 0, "alice": 0, "chain": 0}
        assert not any(pid_alive(pid) for pid in pids if pid is not None)
        for proc in net.sup.processes.values():
            assert "Traceback" not in proc.log_tail(10_000), proc.name
    finally:
        try:
            net.stop(timeout=2)
        finally:
            kill_groups(pids)


# --- the service's parent watchdog -----------------------------------------------------

def watchdog_service(tmp_path: Path, parent_pid: int | None) -> Service:
    return Service("watched", "ipc:///nowhere", None, tmp_path / "watched", parent_pid)


def test_watchdog_stops_a_service_whose_supervisor_died(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "PARENT_CHECK_SECONDS", 0.01)
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait(timeout=30)  # reaped: its pid names no process now
    svc = watchdog_service(tmp_path, gone.pid)
    try:
        asyncio.run(asyncio.wait_for(svc._watch_parent(), timeout=10))
        assert svc.stopping.is_set()
    finally:
        svc.ctx.destroy(linger=0)


def test_watchdog_stops_a_service_that_was_reparented(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "PARENT_CHECK_SECONDS", 0.01)
    svc = watchdog_service(tmp_path, os.getpid())  # the "supervisor" lives on
    svc.start_ppid = os.getppid() + 1  # as if our parent at start-up had died
    try:
        asyncio.run(asyncio.wait_for(svc._watch_parent(), timeout=10))
        assert svc.stopping.is_set()
    finally:
        svc.ctx.destroy(linger=0)


def test_watchdog_keeps_a_service_whose_parents_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "PARENT_CHECK_SECONDS", 0.01)
    svc = watchdog_service(tmp_path, os.getpid())
    try:
        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(svc._watch_parent(), timeout=0.2))
        assert not svc.stopping.is_set()
    finally:
        svc.ctx.destroy(linger=0)
