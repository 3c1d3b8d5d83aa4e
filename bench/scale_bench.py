"""Benchmark of scale: how fast a big network comes up, and what idle peers cost.

Run as ``.venv/bin/python bench/scale_bench.py [--peers 100] [--channels 150]
[--many 500] [--no-forkserver]``. Two phases, each on a fresh network:

1. ``--peers`` peers (default 100) and ``--channels`` public channels (default 150):
   a seeded random graph (a Barabási–Albert tree, then extra distinct channels drawn
   uniformly) with test timers and on-demand mining. Measured, from the first process
   start: every process ready; every link connected; every channel funded (the
   openers' ``fundchannel`` calls run in parallel, one thread per opener, each
   opener's own channels one after another); every channel OPEN on both ends; every
   peer's graph holding every channel with both directions' policies (gossip
   converged). Then the peers are left alone for ``--idle`` seconds and each one's
   proportional set size (PSS, /proc/PID/smaps_rollup: shared pages divided among
   the processes sharing them) and CPU use (utime+stime from /proc) are read.
2. ``--many`` peer processes (default 500) in a ring (each dials the next), no
   channels: the time until all are ready and connected, their PSS, the memory the
   machine has left (MemAvailable), and their idle CPU.

Targets (issue 7): phase 1 within 20 s, an idle peer at most 30 MB PSS, and the
machine holding 500 peer processes. Prints a table and writes
``bench/results/scale.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a plain script from any directory

from emulator.network import Network, PeerPlan  # noqa: E402
from emulator.rpc import RpcClient  # noqa: E402
from emulator.waiting import wait_for  # noqa: E402

RESULTS_PATH = REPO / "bench" / "results" / "scale.json"
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"up_seconds": 20.0, "idle_pss_mb": 30.0, "processes": 500}
CAPACITY_SAT = 1_000_000
FUNDS_SAT = 10_000_000


# --- measuring ------------------------------------------------------------------------

def pss_mb(pid: int) -> float:
    """Proportional set size of one process, in MB (1e6 bytes)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no Pss line for pid {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2), "total": round(sum(values), 1)}


def idle_costs(net: Network, names: list[str], seconds: float) -> dict[str, Any]:
    """PSS and CPU of the peers left alone for ``seconds``."""
    pids = {n: net.sup.processes[n].pid for n in names}
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    time.sleep(seconds)  # a measurement window, not a wait for an outcome
    used = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
    pss = [pss_mb(pid) for pid in pids.values()]
    server = net.sup.forkserver.pid if getattr(net.sup, "forkserver", None) else None
    return {"pss_mb": summary(pss),
            "forkserver_pss_mb": round(pss_mb(server), 2) if server else None,
            "idle_cpu_percent_of_one_core_all_peers": round(100 * sum(used.values()) / seconds,
                                                            2),
            "idle_seconds": seconds}


# --- the network ----------------------------------------------------------------------

def random_graph(n: int, channels: int, seed: int) -> list[tuple[int, int]]:
    """A connected graph: a preferential-attachment tree, then distinct extra edges."""
    if channels < n - 1 or channels > n * (n - 1) // 2:
        raise SystemExit(f"{channels} channels cannot connect {n} peers into a simple graph")
    rng = random.Random(seed)
    edges: list[tuple[int, int]] = [(1, 0)]
    ends = [0, 1]
    for newcomer in range(2, n):
        target = rng.choice(ends)  # by degree
        edges.append((newcomer, target))
        ends += [newcomer, target]
    have = {frozenset(e) for e in edges}
    while len(edges) < channels:
        a, b = rng.sample(range(n), 2)
        if frozenset((a, b)) not in have:
            have.add(frozenset((a, b)))
            edges.append((a, b))
    return edges


def name(i: int) -> str:
    return f"p{i:03d}"


def open_parallel(net: Network, edges: list[tuple[int, int]]) -> None:
    """fundchannel for every edge: one thread per opener, its channels in turn."""
    by_opener: dict[int, list[int]] = {}
    for a, b in edges:
        by_opener.setdefault(a, []).append(b)
    errors: list[str] = []

    def opener(a: int, acceptors: list[int]) -> None:
        client = RpcClient(net.endpoint(name(a), "ctl"))
        try:
            for b in acceptors:
                client.call("fundchannel", node_id=net.node_id(name(b)),
                            amount_sat=CAPACITY_SAT, push_msat=0, reply_timeout=60)
        except Exception as exc:  # reported after the join
            errors.append(f"{name(a)}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=opener, args=item) for item in by_opener.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} openers failed, e.g. {errors[0]}")


def all_open(net: Network, names: list[str], expected: int) -> bool:
    """Every channel OPEN on both ends (getinfo's counts: cheap for the peers)."""
    opened = sum(net.rpc(n).call("getinfo")["channels"].get("OPEN", 0) for n in names)
    return opened >= 2 * expected


def converged(net: Network, names: list[str], expected: int) -> bool:
    """Every peer knows every channel with both directions' policies."""
    return all(net.rpc(n).call("getinfo")["graph"]["complete_channels"] >= expected
               for n in names)


def network_phase(tmp: Path, peers: int, channels: int, seed: int, idle: float,
                  forkserver: bool) -> dict[str, Any]:
    edges = random_graph(peers, channels, seed)
    connect: dict[int, list[str]] = {}
    for a, b in edges:
        connect.setdefault(a, []).append(name(b))
    plans = [PeerPlan(name(i), FUNDS_SAT, tuple(connect.get(i, ()))) for i in range(peers)]
    names = [p.name for p in plans]
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    net = Network(tmp / "network", seed=seed, block_interval=0.0, timers="test",
                  forkserver=forkserver)
    try:
        net.start(plans, ready_timeout=120)
        marks["processes_ready"] = time.monotonic() - t0
        net.wait_connected(timeout=120)
        marks["links_connected"] = time.monotonic() - t0
        open_parallel(net, edges)
        marks["channels_funded"] = time.monotonic() - t0
        net.chain.call("mine", n=1)  # every funding transaction (min_depth is 1)
        wait_for(lambda: all_open(net, names, len(edges)), 120, what="every channel open",
                 interval=0.3)
        marks["channels_open"] = time.monotonic() - t0
        wait_for(lambda: converged(net, names, len(edges)), 120, what="gossip converged",
                 interval=0.5)
        marks["gossip_converged"] = time.monotonic() - t0
        costs = idle_costs(net, names, idle)
    finally:
        net.stop()
    return {"peers": peers, "channels": len(edges), "seed": seed, "forkserver": forkserver,
            "seconds": {k: round(v, 2) for k, v in marks.items()},
            "up_seconds": round(marks["gossip_converged"], 2), **costs}


def many_phase(tmp: Path, count: int, idle: float, forkserver: bool) -> dict[str, Any]:
    plans = [PeerPlan(name(i), 0, (name((i + 1) % count),)) for i in range(count)]
    names = [p.name for p in plans]
    available_before = mem_available_mb()
    t0 = time.monotonic()
    net = Network(tmp / "many", seed=1, block_interval=0.0, timers="test",
                  forkserver=forkserver)
    try:
        net.start(plans, ready_timeout=300)
        ready = time.monotonic() - t0
        net.wait_connected(timeout=300)
        connected = time.monotonic() - t0
        answering = sum(1 for n in names if net.rpc(n).call("getinfo")["name"] == n)
        costs = idle_costs(net, names, idle)
        available_after = mem_available_mb()
        alive = sum(1 for n in names if net.sup.processes[n].running)
    finally:
        net.stop()
    leftover = [n for n in names if net.sup.processes[n].running]
    return {"processes": count, "forkserver": forkserver, "ready_seconds": round(ready, 2),
            "connected_seconds": round(connected, 2), "answering_getinfo": answering,
            "alive_after_idle": alive, "left_running_after_stop": len(leftover),
            "mem_available_mb": {"before": round(available_before),
                                 "with_all_running": round(available_after),
                                 "used": round(available_before - available_after)},
            **costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--channels", type=int, default=150)
    parser.add_argument("--many", type=int, default=500, help="0 skips phase 2")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-forkserver", action="store_true",
                        help="start every process as a fresh python -m (for comparison)")
    args = parser.parse_args()
    forkserver = not args.no_forkserver
    if os.getloadavg()[0] > 1.0:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the start: the "
              "figures will be slow", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="lnemu-scale-"))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "platform": platform.platform(),
                                          "loadavg_at_start": os.getloadavg()},
                              "targets": TARGETS}
    try:
        print(f"phase 1: {args.peers} peers, {args.channels} channels ...", flush=True)
        result["network"] = network_phase(tmp, args.peers, args.channels, args.seed,
                                          args.idle, forkserver)
        print(f"  up in {result['network']['up_seconds']} s", flush=True)
        if args.many:
            print(f"phase 2: {args.many} peer processes ...", flush=True)
            result["many"] = many_phase(tmp, args.many, args.idle, forkserver)
            print(f"  ready in {result['many']['ready_seconds']} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    print_table(result)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS_PATH if forkserver else RESULTS_PATH.with_name("scale-no-forkserver.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(REPO)}")


def print_table(r: dict[str, Any]) -> None:
    net = r["network"]
    rows = [(f"{net['peers']} peers / {net['channels']} channels up, open, gossip converged",
             f"{net['up_seconds']} s", f"<= {TARGETS['up_seconds']} s"),
            ("idle peer PSS (median / max)",
             f"{net['pss_mb']['median']} / {net['pss_mb']['max']} MB",
             f"<= {TARGETS['idle_pss_mb']} MB"),
            (f"idle CPU of all {net['peers']} peers",
             f"{net['idle_cpu_percent_of_one_core_all_peers']}% of a core", "")]
    many = r.get("many")
    if many:
        rows += [(f"{many['processes']} peer processes ready / connected",
                  f"{many['ready_seconds']} / {many['connected_seconds']} s", ""),
                 (f"  answering getinfo, alive after {many['idle_seconds']} s idle",
                  f"{many['answering_getinfo']}, {many['alive_after_idle']}",
                  f"{TARGETS['processes']}"),
                 ("  PSS per peer (median), all peers",
                  f"{many['pss_mb']['median']} MB, {many['pss_mb']['total']} MB", ""),
                 ("  idle CPU of all of them",
                  f"{many['idle_cpu_percent_of_one_core_all_peers']}% of a core", "")]
    print()
    for label, value, target in rows:
        print(f"{label:58} {value:>22}  {target}")
    print(f"  phase 1 marks (s from start): {net['seconds']}")


if __name__ == "__main__":
    main()
