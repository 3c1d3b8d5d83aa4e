"""The run's report: gather what happened, hand it to ``reporting``, print the verdict."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from emulator import breaches as breachmod
from emulator import reproducibility
from emulator.envelope import to_plain
from emulator.errors import LnemuError
from emulator.reporting import (
    GraphChannel,
    GraphNode,
    GraphSnapshot,
    LiquiditySample,
    PaymentRecord,
    RunData,
    write_report,
)
from emulator.traffic import schedule_digest


def _payments(runner: Any) -> list[PaymentRecord]:
    records = []
    for sent in runner.actions.sent if runner.actions else []:
        try:
            out = runner.actions.outcome(sent)
        except LnemuError as exc:
            out = {"status": "failed", "failure": f"unknown: {exc}"}
        latency = None
        if out.get("finished") and out.get("created"):
            latency = out["finished"] - out["created"]
        status = out["status"] if out["status"] in ("succeeded", "failed") else "failed"
        records.append(PaymentRecord(
            index=sent.index, at=sent.at, source=sent.source, dest=sent.dest,
            amount_msat=sent.amount_msat, kind=sent.kind, status=status, latency_s=latency,
            fee_msat=out.get("fee_msat") if status == "succeeded" else None,
            failure=out.get("failure") if status != "succeeded" else None,
            attempts=out.get("attempts", 1) if isinstance(out.get("attempts"), int) else 1,
            parts=out.get("parts", 1)))
    return records


def _first_invoice(runner: Any) -> str:
    """The first invoice the run paid ("" when it paid none)."""
    sent = runner.actions.sent if runner.actions else []
    return next((s.bolt11 for s in sent if s.bolt11), "")


def sample_liquidity(runner: Any) -> list[LiquiditySample]:
    """Each channel side's outbound liquidity now (for the liquidity plot)."""
    net, scenario = runner.net, runner.scenario
    names = {net.node_id(p.name): p.name for p in scenario.peers}
    t = time.monotonic() - runner.actions.started if runner.actions else 0.0
    samples = []
    for p in scenario.peers:
        if not net.process(p.name).running:
            continue  # stopped or killed by a fault: nothing to ask
        for ch in net.rpc(p.name).call("listchannels"):
            if "local_msat" in ch and ch["state"] == "OPEN":
                other = names.get(ch["peer_id"], ch["peer_id"].hex()[:8])
                a, b = sorted((p.name, other))
                samples.append(LiquiditySample(t, f"{a}-{b}", p.name, ch["local_msat"],
                                               ch["capacity_sat"] * 1000))
    return samples


def _graph(runner: Any) -> tuple[GraphSnapshot, dict[str, int]]:
    net, scenario = runner.net, runner.scenario
    names = {net.node_id(p.name): p.name for p in scenario.peers}
    nodes = [GraphNode(p.name, net.node_id(p.name).hex(), p.role) for p in scenario.peers]
    channels, earned = [], {}
    for p in scenario.peers:
        earned[p.name] = net.rpc(p.name).call("getinfo").get("fees_earned_msat", 0)
        for ch in net.rpc(p.name).call("listchannels"):
            if ch["opener"] == "local" and "local_msat" in ch:
                other = names.get(ch["peer_id"], ch["peer_id"].hex()[:8])
                channels.append(GraphChannel(f"{p.name}-{other}", p.name, other,
                                             ch["capacity_sat"], ch["local_msat"],
                                             ch["remote_msat"], ch["state"].lower()))
    return GraphSnapshot(nodes, channels), earned


def collect_and_write(runner: Any, result: Any) -> dict[str, Any]:
    """Build the run's data and write summary.json, report.md and the plots."""
    try:
        graph, earned = _graph(runner)
        samples = sample_liquidity(runner)
    except LnemuError:
        graph, samples, earned = GraphSnapshot(), [], {}
    payments = _payments(runner)
    messages = [p for p in payments if p.kind == "message"]
    penalties = {e["data"].get("txid") for e in runner.net.sup.collector.events(kind="penalty")}
    data = RunData(
        scenario=runner.scenario.name, seed=runner.scenario.seed,
        schedule_digest=schedule_digest(runner.schedule), started_at=time.time(),
        duration_s=time.monotonic() - runner.actions.started if runner.actions else 0.0,
        payments=payments, liquidity=runner.liquidity + samples, graph=graph,
        fees_earned_msat=earned,
        messages={"sent": len(messages),
                  "delivered": sum(1 for m in messages if m.status == "succeeded")},
        penalties=len(penalties),
        invariants=[asdict(c) for c in result.checks if not c.name.startswith("expect:")],
        expectations=[asdict(c) for c in result.checks if c.name.startswith("expect:")],
        node_ids={p.name: runner.net.node_id(p.name).hex() for p in runner.scenario.peers},
        invoice=_first_invoice(runner),
        extra={"schedule": [asdict(p) for p in runner.schedule][:1000],
               "outcomes": reproducibility.outcomes(payments), "error": result.error})
    try:
        data.extra["breaches"] = breachmod.breaches(runner.net)
    except LnemuError as exc:
        data.extra["breaches"] = [{"error": str(exc)}]
    paths = write_report(runner.run_dir, data)
    section = breachmod.markdown([b for b in data.extra["breaches"] if "txid" in b])
    if section:
        with open(paths["report"], "a", encoding="utf-8") as fh:
            fh.write(section)
    return json.loads(paths["summary"].read_text())


def write_summary(runner: Any, result: Any) -> None:
    """Final word in summary.json: every check (including process deaths) and ok."""
    path = runner.run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {
        "scenario": runner.scenario.name, "seed": runner.scenario.seed}
    checks = [asdict(c) for c in result.checks]
    summary.update(ok=result.ok, error=result.error, checks=checks,
                   balances_sat=result.balances, run_dir=str(result.run_dir))
    if "schedule_digest" in summary:  # the run got as far as its report
        summary["reproducibility"] = reproducibility.compare(runner.run_dir, summary)
        report = runner.run_dir / "report.md"
        if report.exists():
            with open(report, "a", encoding="utf-8") as fh:
                fh.write(reproducibility.markdown(summary["reproducibility"]))
    path.write_text(json.dumps(to_plain(summary), indent=2, default=str) + "\n")


def print_result(result: Any, quiet: bool = False) -> None:
    """Print balances and checks (unless quiet), then the verdict and the run directory."""
    console = Console()
    if not quiet and result.balances:
        table = Table(title="On-chain balances")
        table.add_column("peer")
        table.add_column("balance (sat)", justify="right")
        for name, sat in result.balances.items():
            table.add_row(name, f"{sat:,}")
        console.print(table)
    if not quiet:
        for check in result.checks:
            mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
            console.print(f"{mark}  {check.name}: {check.detail}", highlight=False)
    if result.error:
        console.print(f"[red]error:[/] {result.error}", highlight=False)
    verdict = "[green]PASSED[/]" if result.ok else "[red]FAILED[/]"
    console.print(f"{verdict}  run directory: {result.run_dir}", highlight=False)
