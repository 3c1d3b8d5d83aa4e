"""Benchmark of payments: throughput, latency, signatures and CPU per payment.

Run as ``.venv/bin/python bench/payments_bench.py [--payments N] [--inflight K]``.
For each phase it starts a fresh network (so no phase inherits another's history): a
chain and a line of four peers a-b-c-d (block_interval 0, test timers) with channels
a-b, b-c, c-d, once ``a`` knows the whole graph. It measures:

1. payments/s over one hop (a->b keysend), with ``--inflight`` (32) payments always
   outstanding, for ``--payments`` (2000) payments;
2. the same over three hops (a->b->c->d);
3. the latency (p50/p90/p99) of ``--latency-payments`` (200) single, unloaded 3-hop
   keysends made one after another;
4. for each phase, from ``events.jsonl``: ``commitment_signed`` sent per payment,
   ``revoke_and_ack`` sent per payment, HTLC outputs signed, and signatures made and
   checked per payment (BOLT 2/3: each ``commitment_signed`` carries one funding-key
   signature plus one per untrimmed HTLC output, and its receiver verifies all of
   them before it revokes; ``signatures checked`` counts only the commitments whose
   receiver revoked, i.e. that were verified);
5. CPU seconds per payment: utime+stime of every peer process (and, apart, the chain
   and this process, which hosts the event collector) from /proc, from just before
   the phase until every channel is quiescent again (trailing commitment rounds
   included).
6. where an unloaded 3-hop payment's time goes: the milestones of each payment of the
   latency phase, read from its events (``bench/critical_path.py``), with their median
   time since the request and since the milestone before.

Payments are driven by one DEALER socket with ``--inflight`` blocking ``keysend``
requests pipelined on it (the peer answers each when its outcome is known), so the
measuring process costs little CPU. The amount per payment (default 2,500 sat) is far
above the dust limit, so every HTLC has an output on the commitments and a signature.

Each throughput phase also reports payments/s by quarter of its run: a channel that
gets slower as it ages shows there.

``--profile a,b`` additionally runs py-spy on those peers during an extra 1-hop load
(on its own fresh network) and prints their hottest functions, self and inclusive
(needs ``.venv/bin/pip install py-spy``; raw collapsed stacks are left in /tmp).

Prints a table and writes ``bench/results/payments.json``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a plain script from any directory

import zmq  # noqa: E402

from bench.critical_path import milestones, print_milestones  # noqa: E402
from emulator import envelope, transport  # noqa: E402
from emulator.actions import open_channels  # noqa: E402
from emulator.collector import EVENTS_FILE  # noqa: E402
from emulator.network import Network, PeerPlan  # noqa: E402
from emulator.waiting import wait_for  # noqa: E402

RESULTS_PATH = REPO / "bench" / "results" / "payments.json"
TICKS = os.sysconf("SC_CLK_TCK")
PEERS = ("a", "b", "c", "d")
CAPACITY_SAT = 16_000_000  # just under the 2**24 sat limit
FUNDS_SAT = 20_000_000
TARGETS = {"direct_per_s": 1000, "three_hop_per_s": 400, "p50_ms": 10.0}


# --- measuring ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime+stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, int(round(q / 100 * len(ordered) + 0.5)))
    return ordered[min(rank, len(ordered)) - 1]


class Pipeline:
    """Blocking ``keysend`` requests pipelined on one DEALER: ``inflight`` outstanding."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = transport.dealer(self.ctx, endpoint, immediate=False)
        self.rid = 0

    def run(self, dest: bytes, amount_msat: int, count: int, inflight: int,
            timeout: float = 120.0) -> dict[str, Any]:
        """Make ``count`` payments; their wall time, latencies and failures."""
        started: dict[int, float] = {}
        latencies: list[float] = []
        done_at: list[float] = []
        failures: list[str] = []
        sent = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while len(latencies) + len(failures) < count:
            while sent < count and len(started) < inflight:
                self.rid += 1
                started[self.rid] = time.perf_counter()
                self.sock.send(envelope.pack_request(
                    "keysend", {"node_id": dest, "amount_msat": amount_msat, "timeout": 60.0},
                    self.rid))
                sent += 1
            if not self.sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
                raise RuntimeError(f"no payment finished before the {timeout:.0f} s deadline "
                                   f"({len(latencies)} done, {len(started)} outstanding)")
            while self.sock.poll(0):
                body = envelope.unpack_control(self.sock.recv(), "reply")
                t = started.pop(body["rid"], None)
                if t is None:
                    continue
                if body.get("ok") and body["result"]["status"] == "succeeded":
                    latencies.append(time.perf_counter() - t)
                    done_at.append(time.perf_counter() - t0)
                else:
                    failures.append(str(body.get("error") or body.get("result")))
        return {"seconds": time.perf_counter() - t0, "latencies": latencies,
                "done_at": done_at, "failures": failures}

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class Events:
    """Reads what the collector appended to ``events.jsonl`` since a mark."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.path = net.run_dir / EVENTS_FILE
        self.offset = 0

    def settle(self) -> None:
        """Wait until the collector has written everything the peers have sent."""
        collector = self.net.sup.collector
        last, stable_since = -1, time.monotonic()
        while True:
            time.sleep(0.15)
            if collector.count != last:
                last, stable_since = collector.count, time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                return

    def mark(self) -> None:
        self.settle()
        self.offset = self.path.stat().st_size

    def since_mark(self) -> list[dict[str, Any]]:
        self.settle()
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        return [json.loads(line) for line in data.splitlines() if line.strip()]


def protocol_counts(events: list[dict[str, Any]], payments: int) -> dict[str, Any]:
    """Commitment rounds and signatures of a phase, totals and per payment."""
    commits = [e for e in events if e["kind"] == "commitment_signed"]
    revokes_sent = [e for e in events if e["kind"] == "revocation"
                    and e["data"].get("side") == "local"]
    revokes_recv = [e for e in events if e["kind"] == "revocation"
                    and e["data"].get("side") == "remote"]
    htlc_sigs = sum(e["data"]["htlcs"] for e in commits)
    made = len(commits) + htlc_sigs
    # a commitment_signed is verified (1 + htlcs signatures) by its receiver before the
    # receiver revokes its previous commitment: count those the other end answered so
    revoked_by: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    for e in revokes_sent:
        revoked_by[(e["data"]["channel_id"], e["data"]["ctn"] + 1)].add(e["proc"])
    checked = sum(1 + e["data"]["htlcs"] for e in commits
                  if revoked_by[(e["data"]["channel_id"], e["data"]["ctn"])] - {e["proc"]})
    by_kind = collections.Counter(e["kind"] for e in events)
    per = (lambda x: round(x / payments, 3)) if payments else (lambda x: None)
    return {
        "commitment_signed": len(commits), "revoke_and_ack_sent": len(revokes_sent),
        "revoke_and_ack_received": len(revokes_recv), "htlc_signatures": htlc_sigs,
        "signatures_made": made, "signatures_checked": checked,
        "htlcs_per_commitment_signed": round(htlc_sigs / len(commits), 3) if commits else 0,
        "commitment_signed_per_payment": per(len(commits)),
        "revoke_and_ack_per_payment": per(len(revokes_sent)),
        "signatures_made_per_payment": per(made),
        "signatures_checked_per_payment": per(checked),
        "events_per_payment": per(len(events)),
        "events_by_kind": dict(by_kind.most_common()),
    }


class Cpu:
    """CPU seconds of the peers, the chain and this process over a phase."""

    def __init__(self, net: Network) -> None:
        self.pids = {name: proc.pid for name, proc in net.sup.processes.items()}
        self.before: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["bench"] = self_cpu()
        return now

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> dict[str, float]:
        after = self.read()
        return {name: round(after[name] - self.before[name], 3) for name in after}


# --- the network ----------------------------------------------------------------------

def build_network(run_dir: Path) -> Network:
    net = Network(run_dir, seed=1, block_interval=0.0, timers="test")
    net.start([PeerPlan("a", FUNDS_SAT, ("b",)), PeerPlan("b", FUNDS_SAT, ("c",)),
               PeerPlan("c", FUNDS_SAT, ("d",)), PeerPlan("d", FUNDS_SAT)])
    net.wait_connected()
    open_channels(net, [("a", "b", CAPACITY_SAT, 0), ("b", "c", CAPACITY_SAT, 0),
                        ("c", "d", CAPACITY_SAT, 0)])

    def gossip_done() -> bool:
        net.chain.call("mine", n=1)  # in case announcements wait for depth
        return len(net.rpc("a").call("listgraph")["channels"]) >= 3
    wait_for(gossip_done, 60, what="a knows a-b, b-c and c-d")
    return net


def quiescent(net: Network) -> bool:
    return all(ch["quiescent"] for n in PEERS for ch in net.rpc(n).call("listchannels")
               if ch["state"] == "OPEN")


def wait_quiet(net: Network) -> float:
    """Wait until no HTLC or commitment round is in flight anywhere; when (perf_counter)."""
    wait_for(lambda: quiescent(net), 60, what="all channels quiescent", interval=0.005)
    return time.perf_counter()


def load_phase(net: Network, events: Events, dest: str, amount_msat: int, count: int,
               inflight: int, label: str) -> dict[str, Any]:
    """``count`` payments a->dest with ``inflight`` outstanding; throughput and costs."""
    pipe = Pipeline(net.endpoint("a", "ctl"))
    try:
        pipe.run(net.node_id(dest), amount_msat, min(64, count), inflight)  # warm-up
        wait_quiet(net)
        events.mark()
        cpu = Cpu(net)
        cpu.start()
        res = pipe.run(net.node_id(dest), amount_msat, count, inflight)
        wait_quiet(net)
        used = cpu.stop()
    finally:
        pipe.close()
    if res["failures"]:
        print(f"  {label}: {len(res['failures'])} failed, e.g. {res['failures'][0]}",
              file=sys.stderr)
    ok = len(res["latencies"])
    peer_cpu = sum(used[n] for n in PEERS)
    lat = res["latencies"]
    quarters = []  # throughput by quarter: does it fall as the channel ages?
    done = res["done_at"]
    for q in range(4):
        part = done[q * len(done) // 4:(q + 1) * len(done) // 4]
        start = done[q * len(done) // 4 - 1] if q else 0.0
        if len(part) > 1:
            quarters.append(round(len(part) / (part[-1] - start), 1))
    return {"payments": count, "succeeded": ok, "failed": len(res["failures"]),
            "inflight": inflight, "payments_per_s_by_quarter": quarters, "amount_msat": amount_msat,
            "seconds": round(res["seconds"], 3),
            "payments_per_s": round(ok / res["seconds"], 1),
            "latency_ms": {"p50": round(1000 * percentile(lat, 50), 2),
                           "p99": round(1000 * percentile(lat, 99), 2)} if lat else None,
            "cpu_seconds": used, "peer_cpu_seconds": round(peer_cpu, 3),
            "peer_cpu_ms_per_payment": round(1000 * peer_cpu / ok, 3) if ok else None,
            "protocol": protocol_counts(events.since_mark(), ok)}


def latency_phase(net: Network, events: Events, amount_msat: int, count: int
                  ) -> dict[str, Any]:
    """``count`` 3-hop payments one after another (nothing else in flight)."""
    pipe = Pipeline(net.endpoint("a", "ctl"))
    dest = net.node_id("d")
    try:
        pipe.run(dest, amount_msat, 10, 1)  # warm-up
        wait_quiet(net)
        events.mark()
        cpu = Cpu(net)
        cpu.start()
        lat: list[float] = []
        windows: list[tuple[float, float]] = []  # each payment's request and reply
        failed = 0
        for _ in range(count):
            requested = time.time()  # the clock of the events' timestamps
            res = pipe.run(dest, amount_msat, 1, 1)
            windows.append((requested, time.time()))
            lat += res["latencies"]
            failed += len(res["failures"])
            # unloaded: the trailing commitment rounds of the previous payment are done
            time.sleep(0.02)  # mostly enough; polling listchannels costs peers CPU
            wait_for(lambda: quiescent(net), 30, what="quiescent between payments",
                     interval=0.005)
        used = cpu.stop()
    finally:
        pipe.close()
    ok = len(lat)
    peer_cpu = sum(used[n] for n in PEERS)
    seen = events.since_mark()
    return {"payments": count, "succeeded": ok, "failed": failed, "amount_msat": amount_msat,
            "latency_ms": {"p50": round(1000 * percentile(lat, 50), 2),
                           "p90": round(1000 * percentile(lat, 90), 2),
                           "p99": round(1000 * percentile(lat, 99), 2),
                           "mean": round(1000 * statistics.fmean(lat), 2),
                           "min": round(1000 * min(lat), 2),
                           "max": round(1000 * max(lat), 2)} if lat else None,
            "cpu_seconds": used, "peer_cpu_seconds": round(peer_cpu, 3),
            "peer_cpu_ms_per_payment": round(1000 * peer_cpu / ok, 3) if ok else None,
            "protocol": protocol_counts(seen, ok),
            "milestones": milestones(seen, windows)}


def profile_phase(net: Network, peers: list[str], amount_msat: int, count: int,
                  inflight: int, seconds: int, dest: str = "b") -> dict[str, Any]:
    """py-spy on ``peers`` while a load a->dest runs; their hottest functions."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out: dict[str, Any] = {}
    procs = []
    for peer in peers:
        raw = Path(tempfile.gettempdir()) / f"lnemu-payments-{peer}.txt"
        pid = net.sup.processes[peer].pid
        procs.append(subprocess.Popen(
            [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--format", "raw",
             "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out[peer] = {"raw": str(raw)}
    time.sleep(1.0)  # let py-spy attach
    pipe = Pipeline(net.endpoint("a", "ctl"))
    t_end = time.monotonic() + seconds
    done = 0
    try:
        while time.monotonic() < t_end:
            pipe.run(net.node_id(dest), amount_msat, count, inflight)
            done += count
    finally:
        pipe.close()
    for p in procs:
        p.wait(timeout=seconds + 30)
    for peer in peers:
        out[peer] |= summarize_raw(Path(out[peer]["raw"]))
        out[peer]["busy_share"] = round(out[peer]["samples"] / (200 * seconds), 2)
    return {"payments": done, "seconds": seconds, "peers": out}


def summarize_raw(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    pct = lambda c: round(100 * c / total, 1)  # noqa: E731
    return {"samples": total,
            "self": [(f, pct(c)) for f, c in own.most_common(top)],
            "inclusive": [(f, pct(c)) for f, c in incl.most_common(top + 15)]}


# --- output ----------------------------------------------------------------------------

def print_table(r: dict[str, Any]) -> None:
    d, t, lat = r["direct"], r["three_hop"], r["latency_3hop"]
    rows = [
        (f"payments/s, 1 hop, {d['inflight']} in flight", d["payments_per_s"],
         f">= {TARGETS['direct_per_s']}"),
        (f"payments/s, 3 hops, {t['inflight']} in flight", t["payments_per_s"],
         f">= {TARGETS['three_hop_per_s']}"),
        ("p50 ms, one unloaded 3-hop payment", lat["latency_ms"]["p50"],
         f"<= {TARGETS['p50_ms']}"),
        ("p99 ms, one unloaded 3-hop payment", lat["latency_ms"]["p99"], ""),
    ]
    print()
    print(f"{'figure':44} {'measured':>10}  target")
    for name, value, target in rows:
        print(f"{name:44} {value:>10}  {target}")
    print()
    head = (f"{'phase':12} {'pay/s':>7} {'p50ms':>7} {'p99ms':>7} {'CS/pay':>7} {'RAA/pay':>7} "
            f"{'htlc/CS':>7} {'sigM/pay':>8} {'sigC/pay':>8} {'cpu ms/pay':>10}")
    print(head)
    for name, ph in (("1 hop", d), ("3 hops", t), ("3h unloaded", lat)):
        p = ph["protocol"]
        rate = ph.get("payments_per_s", "-")
        print(f"{name:12} {rate:>7} {ph['latency_ms']['p50']:>7} {ph['latency_ms']['p99']:>7} "
              f"{p['commitment_signed_per_payment']:>7} {p['revoke_and_ack_per_payment']:>7} "
              f"{p['htlcs_per_commitment_signed']:>7} {p['signatures_made_per_payment']:>8} "
              f"{p['signatures_checked_per_payment']:>8} {ph['peer_cpu_ms_per_payment']:>10}")
    print("  CS = commitment_signed sent, RAA = revoke_and_ack sent, sigM/sigC = signatures "
          "made/checked\n  (1 funding + 1 per HTLC output per commitment_signed), cpu = "
          "all peers' utime+stime")
    for name, ph in (("1 hop", d), ("3 hops", t)):
        print(f"  payments/s by quarter, {name}: {ph['payments_per_s_by_quarter']}")
    for name, ph in (("1 hop", d), ("3 hops", t), ("3h unloaded", lat)):
        print(f"  cpu seconds {name}: {ph['cpu_seconds']}")
    for name, ph in (("1 hop", d), ("3 hops", t), ("3h unloaded", lat)):
        top = list(ph["protocol"]["events_by_kind"].items())[:6]
        print(f"  events per payment {name}: {ph['protocol']['events_per_payment']} "
              f"(most: {', '.join(f'{k} {v}' for k, v in top)})")
    print_milestones(lat.get("milestones", []), lat["succeeded"])
    prof = r.get("profile")
    for peer, p in (prof or {}).get("peers", {}).items():
        print(f"\nprofile of peer {peer} under load ({p['samples']} samples, busy "
              f"~{100 * p['busy_share']:.0f}% of {prof['seconds']} s; raw {p['raw']})")
        print("  self time:")
        for f, pct in p["self"][:15]:
            print(f"    {pct:5.1f}%  {f}")
        print("  inclusive (below the event loop):")
        shown = 0
        for f, pct in p["inclusive"]:
            if pct < 99.0 and shown < 25:
                print(f"    {pct:5.1f}%  {f}")
                shown += 1


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=2000,
                        help="payments in each throughput phase (default 2000)")
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--latency-payments", type=int, default=200)
    parser.add_argument("--amount-sat", type=int, default=2_500)
    parser.add_argument("--profile", metavar="PEERS", default=None,
                        help="also py-spy these peers (e.g. a,b) during an extra 1-hop load")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--profile-dest", default="b", choices=PEERS[1:],
                        help="the payee during profiling: b (1 hop, default) or d (3 hops)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    return parser.parse_args()


def main() -> None:
    # The event collector is a thread of this process: with the default 5 ms switch
    # interval, a reply could wait that long for the GIL while the collector writes
    # events, which would measure this process, not the network.
    sys.setswitchinterval(0.0002)
    args = arguments()
    # every phase has its own channels: stay well inside a channel's capacity
    total = max(args.payments + 64, args.latency_payments + 10, 4000 if args.profile else 0)
    amount_msat = min(args.amount_sat * 1000, int(CAPACITY_SAT * 1000 * 0.85) // total)
    if amount_msat < 1_000_000:
        print(f"warning: {amount_msat} msat per payment may be trimmed (no HTLC output, "
              "no HTLC signature); use fewer payments", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="lnemu-paybench-"))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "platform": platform.platform(),
                                          "loadavg_at_start": os.getloadavg()},
                              "targets": TARGETS, "amount_msat": amount_msat}
    if os.getloadavg()[0] > 1.0:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the start: other "
              "processes compete for the CPUs and the figures will be low", file=sys.stderr)
    t_all = time.monotonic()

    def phase(label: str, run: Any) -> Any:
        """Run one phase on a fresh network (no phase inherits another's history)."""
        t0 = time.monotonic()
        net = build_network(tmp / label)
        try:
            result.setdefault("setup_seconds", round(time.monotonic() - t0, 1))
            return run(net)
        finally:
            net.stop()

    try:
        print(f"each phase: a fresh line a-b-c-d, channels of {CAPACITY_SAT} sat; "
              f"{amount_msat} msat per keysend", flush=True)
        print(f"1 hop: {args.payments} payments, {args.inflight} in flight ...", flush=True)
        result["direct"] = phase("direct", lambda net: load_phase(
            net, Events(net), "b", amount_msat, args.payments, args.inflight, "1 hop"))
        print(f"  {result['direct']['payments_per_s']}/s", flush=True)
        print(f"3 hops: {args.payments} payments, {args.inflight} in flight ...", flush=True)
        result["three_hop"] = phase("three_hop", lambda net: load_phase(
            net, Events(net), "d", amount_msat, args.payments, args.inflight, "3 hops"))
        print(f"  {result['three_hop']['payments_per_s']}/s", flush=True)
        print(f"3 hops unloaded: {args.latency_payments} payments one at a time ...",
              flush=True)
        result["latency_3hop"] = phase("latency", lambda net: latency_phase(
            net, Events(net), amount_msat, args.latency_payments))
        print(f"  p50 {result['latency_3hop']['latency_ms']['p50']} ms", flush=True)
        if args.profile:
            peers = args.profile.split(",")
            print(f"profiling {', '.join(peers)} for {args.profile_seconds} s under a "
                  f"load a->{args.profile_dest} ...", flush=True)
            result["profile"] = phase("profile", lambda net: profile_phase(
                net, peers, amount_msat, 500, args.inflight, args.profile_seconds,
                args.profile_dest))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"run directories kept: {tmp}")
    result["total_seconds"] = round(time.monotonic() - t_all, 1)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    print_table(result)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {RESULTS_PATH.relative_to(REPO)} (total {result['total_seconds']} s)")


if __name__ == "__main__":
    main()
