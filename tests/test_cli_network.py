"""`lnemu up` + verbs from a shell + `lnemu down`, which leaves no process behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.waiting import wait_for
from tests.test_runner import _alive

pytestmark = pytest.mark.process
LNEMU = [sys.executable, "-m", "emulator.cli"]
SCENARIO = """
[network]
name = "up-test"
block_interval = 0.2
[[peers]]
name = "alice"
funds_sat = 2_000_000
[[peers]]
name = "bob"
funds_sat = 1_000_000
[[peers]]
name = "carol"
[[channels]]
a = "alice"
b = "bob"
capacity_sat = 1_000_000
[[channels]]
a = "bob"
b = "carol"
capacity_sat = 500_000
"""


def lnemu(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LNEMU, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True)
    children = [int(x) for x in out.stdout.split()]
    return children + [d for child in children for d in _descendants(child)]


def test_up_pay_status_down(tmp_path):
    (tmp_path / "net.toml").write_text(SCENARIO)
    run_dir = tmp_path / "runs" / "up"
    up = lnemu(tmp_path, "up", "net.toml", "--dir", str(run_dir))
    pid = None
    try:
        assert up.returncode == 0, up.stderr
        pid = int((run_dir / "supervisor.pid").read_text())
        children = _descendants(pid)
        assert len(children) == 5  # the fork server, and the chain and three peers it forked
        inv = lnemu(tmp_path, "invoice", "create", "carol", "25000000", "--json",
                    "--dir", str(run_dir))
        assert inv.returncode == 0, inv.stderr
        bolt11 = json.loads(inv.stdout)["bolt11"]
        paid = lnemu(tmp_path, "pay", "alice", bolt11, "--json", "--dir", str(run_dir))
        assert paid.returncode == 0, paid.stderr
        assert json.loads(paid.stdout)["status"] == "succeeded"
        status = json.loads(lnemu(tmp_path, "status", "--json", "--dir", str(run_dir)).stdout)
        assert status["carol"]["channels"][0]["local_msat"] == 25_000_000
        sent = lnemu(tmp_path, "keysend", "alice", "carol", "1000", "--timeout", "30", "--json",
                     "--dir", str(run_dir))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "succeeded"
        for bad, says in (("0", "--timeout"), ("1e9", "timeout must be")):  # click; the peer
            refused = lnemu(tmp_path, "keysend", "alice", "carol", "1000", "--timeout", bad,
                            "--dir", str(run_dir))
            assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        bad = lnemu(tmp_path, "pay", "mallory", bolt11, "--dir", str(run_dir))
        assert bad.returncode == 2 and "unknown peer" in bad.stderr
        down = lnemu(tmp_path, "down", "--dir", str(run_dir))
        assert down.returncode == 0, down.stderr
        wait_for(lambda: not any(_alive(p) for p in [pid, *children]), 15,
                 what="supervisor and children gone")
        gone = lnemu(tmp_path, "status", "--dir", str(run_dir))
        assert gone.returncode == 2 and "no network is up" in gone.stderr
    finally:
        if pid is not None and _alive(pid):
            subprocess.run(["kill", "-9", str(pid)])
