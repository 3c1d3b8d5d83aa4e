"""Every quick scenario in scenarios/ runs, passes and writes its report; a seed
fixes the node ids and the traffic schedule.

The scenarios are discovered as ``make scenarios`` does (scripts/run_scenarios.py):
slow ones — a description starting with "SLOW" — are left out.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LNEMU = [sys.executable, "-m", "emulator.cli"]
PLOTS = ("success_over_time.png", "latency_cdf.png", "liquidity.png", "network.png")
TRAFFIC_SCENARIO = "poisson_traffic.toml"  # run twice by the reproducibility test


def _load_runner_script():
    spec = importlib.util.spec_from_file_location("run_scenarios",
                                                  REPO / "scripts" / "run_scenarios.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


run_scenarios = _load_runner_script()
QUICK = [path for path, _ in run_scenarios.discover()]


def _run(scenario: Path, out: Path) -> dict:
    """``lnemu run`` the scenario into ``out``; assert it passed and wrote its report."""
    proc = subprocess.run([*LNEMU, "run", str(scenario), "--out", str(out), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=110)
    summary_path = out / "summary.json"
    detail = proc.stdout + proc.stderr
    if summary_path.exists():
        failed = [c for c in json.loads(summary_path.read_text())["checks"] if not c["ok"]]
        detail += f"\nfailed checks: {failed}\nrun directory: {out}"
    assert proc.returncode == 0, detail
    for name in ("summary.json", "report.md", *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is True
    return summary


def test_quick_and_slow_scenarios_are_told_apart():
    everything = run_scenarios.discover(include_slow=True)
    slow = [path.name for path, scenario in everything if run_scenarios.is_slow(scenario)]
    assert "scale_free_50.toml" in slow
    assert len(QUICK) + len(slow) == len(everything) >= 12
    assert Path(REPO / "scenarios" / TRAFFIC_SCENARIO) in QUICK


@pytest.mark.process
@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", [p for p in QUICK if p.name != TRAFFIC_SCENARIO],
                         ids=lambda p: p.stem)
def test_quick_scenario_passes_and_writes_its_report(scenario, tmp_path):
    summary = _run(scenario, tmp_path / scenario.stem)
    report = (tmp_path / scenario.stem / "report.md").read_text(encoding="utf-8")
    assert "✅ passed" in report
    if summary["payments"]["by_kind"].get("invoice"):
        # a paid invoice is shown decoded, with its QR code
        assert (tmp_path / scenario.stem / "invoice_qr.png").is_file()
        assert "## Invoice" in report and "](invoice_qr.png)" in report


@pytest.mark.process
@pytest.mark.timeout(120)
def test_same_scenario_and_seed_give_same_node_ids_and_schedule(tmp_path):
    from emulator.runner import traffic_schedule
    from emulator.scenario import load_scenario
    from emulator.traffic import schedule_digest

    path = REPO / "scenarios" / TRAFFIC_SCENARIO
    scenario = load_scenario(path)
    assert scenario.traffic, "the reproducibility check needs a scenario with [traffic]"
    first, second = (_run(path, tmp_path / f"run{n}") for n in (1, 2))
    assert first["node_ids"] == second["node_ids"]
    assert set(first["node_ids"]) == {p.name for p in scenario.peers}
    assert first["schedule_digest"] == second["schedule_digest"] \
        == schedule_digest(traffic_schedule(scenario))
    assert first["payments"]["attempted"] == second["payments"]["attempted"] \
        == len(traffic_schedule(scenario)) > 10
    # the second run compares its outcomes with the first, payment by payment
    assert first["reproducibility"]["compared_with"] is None
    repro = second["reproducibility"]
    assert Path(repro["compared_with"]).name == "run1" and repro["same_node_ids"]
    assert repro["payments_compared"] == first["payments"]["attempted"]
    differing = sum(1 for (i, a), (j, b) in zip(first["extra"]["outcomes"],
                                                 second["extra"]["outcomes"], strict=True)
                    if (i, a) != (j, b))
    assert repro["payments_differing"] == differing
    assert repro["succeeded"] == [second["payments"]["succeeded"],
                                  first["payments"]["succeeded"]]
    report = (tmp_path / "run2" / "report.md").read_text(encoding="utf-8")
    assert "## Reproducibility" in report and "ended differently" in report
