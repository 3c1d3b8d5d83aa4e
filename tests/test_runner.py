"""The runner and the launcher end to end: demo scenario, SIGKILL leaves no orphan."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
LNEMU = [sys.executable, "-m", "emulator.cli"]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.process
def test_demo_scenario_runs_and_writes_events(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([*LNEMU, "run", "scenarios/demo.toml", "--out", str(out), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(out) in proc.stdout
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"started", "block", "connected", "tx_sent", "tx_confirmed", "channel_open",
            "payment_succeeded", "message_received"} <= kinds
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["balances_sat"]["carol"] == 350_000
    assert (out / "report.md").exists() and (out / "network.png").exists()


@pytest.mark.process
def test_failed_expectation_exits_1(tmp_path):
    text = (REPO / "scenarios/demo.toml").read_text().replace(
        "min_sat = 350_000", "min_sat = 450_000").replace("max_sat = 350_000", "max_sat = 450_000")
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(text)
    proc = subprocess.run([*LNEMU, "run", str(scenario), "--out", str(tmp_path / "r"), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout


@pytest.mark.process
def test_killing_the_runner_with_sigkill_leaves_no_process(tmp_path):
    scenario = tmp_path / "long.toml"
    scenario.write_text("""
[network]
block_interval = 0.2
[[peers]]
name = "alice"
funds_sat = 100000
connect = ["bob"]
[[peers]]
name = "bob"
[[events]]
action = "wait"
seconds = 120
""")
    out = tmp_path / "run"
    runner = subprocess.Popen([*LNEMU, "run", str(scenario), "--out", str(out), "--quiet"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    pids: list[int] = []
    try:
        def children_ready():
            files = [out / n / "ready" for n in ("chain", "alice", "bob")]
            return all(f.exists() for f in files) and files
        files = wait_for(children_ready, 30, what="chain and peers ready")
        pids = [json.loads(f.read_text())["pid"] for f in files]
        assert all(_alive(p) for p in pids)
        runner.kill()
        runner.wait(10)
        wait_for(lambda: not any(_alive(p) for p in pids), 15,
                 what="every child gone after the runner's SIGKILL")
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(10)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
