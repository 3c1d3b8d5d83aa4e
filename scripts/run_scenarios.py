"""Run every scenario in ``scenarios/`` one after another and print a summary table.

Usage: ``python scripts/run_scenarios.py [--all] [--out DIR] [FILE ...]``
(``make scenarios``, ``make scenarios ALL=1``).

Quick scenarios run by default; ``--all`` adds the slow ones — those whose
``[network] description`` starts with "SLOW". Each runs as its own ``lnemu run``
process with a run directory under ``--out``; the table at the end gives each
scenario's result, wall-clock seconds and payments succeeded/attempted (from its
``summary.json``). The exit code is 1 if any scenario failed, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO_DIR = REPO / "scenarios"
SLOW_RE = re.compile(r"\s*slow\b", re.IGNORECASE)
QUICK_TIMEOUT_S = 300.0
SLOW_TIMEOUT_S = 1200.0

sys.path.insert(0, str(REPO))
from emulator.scenario import Scenario, ScenarioError, load_scenario  # noqa: E402


@dataclass
class Outcome:
    """How one scenario run ended."""

    name: str
    path: Path
    result: str  # PASS | FAIL | TIMEOUT | ERROR
    seconds: float
    payments_ok: int | None = None
    payments_total: int | None = None
    run_dir: Path | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "PASS"


def is_slow(scenario: Scenario) -> bool:
    """A scenario is slow when its description starts with "SLOW"."""
    return bool(SLOW_RE.match(scenario.description))


def discover(directory: Path = SCENARIO_DIR, include_slow: bool = False,
             ) -> list[tuple[Path, Scenario]]:
    """The scenario files of ``directory`` (sorted by name), loaded and validated."""
    found = []
    for path in sorted(directory.glob("*.toml")):
        scenario = load_scenario(path)
        if include_slow or not is_slow(scenario):
            found.append((path, scenario))
    return found


def run_one(path: Path, scenario: Scenario, out: Path, timeout_s: float) -> Outcome:
    """Run one scenario with ``lnemu run`` in a subprocess; read its summary.json."""
    run_dir = out / scenario.name
    argv = [sys.executable, "-m", "emulator.cli", "run", str(path), "--out", str(run_dir),
            "--quiet"]
    started = time.monotonic()
    # its own session: on a timeout we end the runner's whole process group (the runner's
    # children also exit on their own once their parent is gone)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Outcome(scenario.name, path, "TIMEOUT", time.monotonic() - started,
                       run_dir=run_dir, note=f"killed after {timeout_s:.0f} s")
    seconds = time.monotonic() - started
    outcome = Outcome(scenario.name, path, "PASS" if proc.returncode == 0 else "FAIL",
                      seconds, run_dir=run_dir)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        payments = summary.get("payments", {})
        outcome.payments_ok = payments.get("succeeded")
        outcome.payments_total = payments.get("attempted")
        failed = [c["name"] for c in summary.get("checks", []) if not c.get("ok")]
        outcome.note = summary.get("error") or "; ".join(failed)
    elif proc.returncode != 0:
        outcome.result = "ERROR"
        outcome.note = output.strip().splitlines()[-1] if output.strip() else "no output"
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The summary table: name, result, seconds, payments ok/total."""
    rows = [("scenario", "result", "seconds", "payments ok/total")]
    for o in outcomes:
        pays = f"{o.payments_ok}/{o.payments_total}" if o.payments_total is not None else "-"
        rows.append((o.name, o.result, f"{o.seconds:.1f}", pays))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if i >= 2 else cell.ljust(w)  # numbers to the right
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="scenario files (default: every one in scenarios/)")
    parser.add_argument("--all", action="store_true", help="include slow scenarios")
    parser.add_argument("--out", type=Path, default=None,
                        help="parent of the run directories (default runs/scenarios-TIME)")
    args = parser.parse_args(argv)
    try:
        if args.files:
            chosen = [(p, load_scenario(p)) for p in args.files]
        else:
            chosen = discover(include_slow=args.all)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO / "runs" / f"scenarios-{time.strftime('%Y%m%d-%H%M%S')}"
    outcomes = []
    for n, (path, scenario) in enumerate(chosen, 1):
        slow = is_slow(scenario)
        print(f"[{n}/{len(chosen)}] {scenario.name}{' (slow)' if slow else ''} ...",
              end=" ", flush=True)
        outcome = run_one(path, scenario, out, SLOW_TIMEOUT_S if slow else QUICK_TIMEOUT_S)
        print(f"{outcome.result} in {outcome.seconds:.1f} s"
              + (f" — {outcome.note}" if not outcome.passed and outcome.note else ""),
              flush=True)
        outcomes.append(outcome)
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} passed; run directories in {out}")
    for o in failed:
        print(f"  {o.name}: {o.result} — see {o.run_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
