"""Chaos runs: the same seed plans the same faults; a short run holds every invariant
and its report lists the fault history."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator import chaos
from emulator.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "chaos.toml"


def test_same_seed_same_fault_plan_other_seed_other_plan():
    scenario = load_scenario(SCENARIO)
    first, again = (chaos.plan(scenario, 7, 20.0) for _ in range(2))
    assert first == again and first.faults
    assert chaos.plan(scenario, 8, 20.0) != first
    names = {p.name for p in scenario.peers}
    for fault in first.faults:
        assert 0 < fault.at < 20.0
        assert set(v for k, v in fault.params.items() if k in ("peer", "to")) <= names


def test_fault_history_section_lists_every_fault():
    plan = chaos.ChaosPlan(3, 10.0, [
        chaos.FaultEvent(1.25, "kill", {"peer": "p1"}, 3.5, True),
        chaos.FaultEvent(2.0, "reorg", {"depth": 2}, None, False, "RpcTimeout: no reply")])
    text = chaos.fault_history_markdown(plan)
    assert "## Fault history" in text and "Chaos seed 3" in text
    assert "| 1.2 | kill | peer=p1 | 3.5 | injected |" in text
    assert "| 2.0 | reorg | depth=2 | - | not injected; RpcTimeout: no reply |" in text


@pytest.mark.process
@pytest.mark.timeout(150)
def test_a_short_chaos_run_holds_every_invariant(tmp_path):
    out = tmp_path / "chaos"
    proc = subprocess.run(
        [sys.executable, "-m", "emulator.cli", "chaos", str(SCENARIO), "--seed", "3",
         "--duration", "8", "--out", str(out), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=140)
    summary = json.loads((out / "summary.json").read_text())
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, (proc.stdout + proc.stderr, failed)
    faults = summary["chaos"]["faults"]
    assert summary["chaos"]["seed"] == 3 and any(f["injected"] for f in faults)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Fault history" in report
    assert sum(1 for line in report.splitlines() if line.startswith("| ") and
               line.split("|")[2].strip() in {f["kind"] for f in faults}) == len(faults)
