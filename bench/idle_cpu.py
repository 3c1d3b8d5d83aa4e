"""Measure what idle processes cost: a chain and N connected peers left alone.

Reads utime+stime of every process from /proc before and after the idle window
and prints the share of one core they used together. Not a test: a measurement.

    .venv/bin/python bench/idle_cpu.py [--peers 10] [--seconds 10] [--block-interval 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulator.network import Network, PeerPlan  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--block-interval", type=float, default=1.0)
    args = parser.parse_args()
    names = [f"p{i}" for i in range(args.peers)]
    plans = [PeerPlan(n, 100_000, (names[(i + 1) % len(names)],) if len(names) > 1 else ())
             for i, n in enumerate(names)]
    with tempfile.TemporaryDirectory() as tmp:
        net = Network(Path(tmp) / "idle", block_interval=args.block_interval)
        try:
            net.start(plans)
            net.wait_connected()
            pids = [p.pid for p in net.sup.processes.values()]
            before = sum(cpu_seconds(p) for p in pids)
            time.sleep(args.seconds)  # the idle window being measured
            used = sum(cpu_seconds(p) for p in pids) - before
        finally:
            net.stop()
    share = 100 * used / args.seconds
    result = {"processes": len(pids), "seconds": args.seconds, "cpu_seconds": round(used, 3),
              "percent_of_one_core": round(share, 2), "block_interval": args.block_interval}
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "idle_cpu.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
