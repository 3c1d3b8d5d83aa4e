"""`make chaos`: run N chaos seeds on the chaos scenario and print a table.

    python scripts/chaos.py [N] [--duration S] [--scenario FILE] [--faults a,b]

Each seed's run directory (with its fault history in summary.json and report.md) is
under runs/chaos/. Exits non-zero if any seed found a violation.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("seeds", type=int, nargs="?", default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--scenario", default="scenarios/chaos.toml")
    parser.add_argument("--faults", default="")
    parser.add_argument("--out", default="runs/chaos")
    args = parser.parse_args()
    table = Table(title=f"chaos: {args.seeds} seeds on {args.scenario}")
    for column in ("seed", "faults", "payments ok/total", "violations", "seconds", "run"):
        table.add_column(column)
    failures = 0
    for seed in range(1, args.seeds + 1):
        run_dir = Path(args.out) / f"seed-{seed}"
        started = time.monotonic()
        cmd = [sys.executable, "-m", "emulator.cli", "chaos", args.scenario, "--seed",
               str(seed), "--duration", str(args.duration), "--out", str(run_dir), "--quiet"]
        if args.faults:
            cmd += ["--faults", args.faults]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.monotonic() - started
        summary = json.loads((run_dir / "summary.json").read_text()) \
            if (run_dir / "summary.json").exists() else {}
        checks = summary.get("checks", [])
        violations = [c["name"] for c in checks if not c["ok"]]
        if proc.returncode != 0:
            failures += 1
            if not violations:
                violations = [summary.get("error") or proc.stderr.strip()[-200:]]
        pay = summary.get("payments", {})
        injected = [f for f in summary.get("chaos", {}).get("faults", []) if f.get("injected")]
        table.add_row(str(seed), str(len(injected)),
                      f"{pay.get('succeeded', 0)}/{pay.get('attempted', 0)}",
                      str(len(violations)) + (f": {violations[0][:60]}" if violations else ""),
                      f"{seconds:.0f}", str(run_dir))
    Console().print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
