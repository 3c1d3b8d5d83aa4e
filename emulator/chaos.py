"""Randomized chaos: a nemesis injects faults drawn from the seed while the scenario's
traffic runs, then heals everything, lets HTLCs resolve (mining past their expiries)
and checks Lightning's invariants. A run is reproducible from its seed: the fault
schedule and the payment schedule are the same every time (``--replay`` reads both
back from a run directory).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator import faults
from emulator.errors import LnemuError
from emulator.invariants import Check
from emulator.runner import Runner
from emulator.scenario import Scenario
from emulator.waiting import wait_for

DEFAULT_FAULTS = ("kill", "pause", "delay", "loss", "partition", "pause_mining", "reorg")
SETTLE_BLOCKS = 60


@dataclass
class FaultEvent:
    at: float
    kind: str
    params: dict[str, Any]
    heal_at: float | None = None
    injected: bool = False
    error: str = ""


@dataclass
class ChaosPlan:
    seed: int
    duration_s: float
    faults: list[FaultEvent] = field(default_factory=list)


def plan(scenario: Scenario, seed: int, duration_s: float, kinds: tuple[str, ...] =
         DEFAULT_FAULTS, mean_gap_s: float = 3.0) -> ChaosPlan:
    """The fault schedule for ``seed`` (the same seed gives the same schedule)."""
    rng = random.Random(f"chaos:{seed}")
    names = [p.name for p in scenario.peers]
    pairs = [(c.a, c.b) for c in scenario.channels] or [(names[0], names[-1])]
    events, t = [], rng.expovariate(1 / mean_gap_s)
    while t < duration_s * 0.8:
        kind = rng.choice(kinds)
        a, b = rng.choice(pairs)
        if rng.random() < 0.5:
            a, b = b, a
        params = _params(kind, rng, a, b, names)
        heal_at = min(duration_s, t + rng.uniform(1.0, 4.0)) if kind != "reorg" else None
        events.append(FaultEvent(round(t, 3), kind, params, heal_at and round(heal_at, 3)))
        t += rng.expovariate(1 / mean_gap_s)
    return ChaosPlan(seed, duration_s, events)


def _params(kind: str, rng: random.Random, a: str, b: str, names: list[str]) -> dict[str, Any]:
    seed = rng.randrange(2**31)
    if kind in ("kill", "pause", "stop"):
        return {"peer": a}
    if kind == "delay":
        return {"peer": a, "to": b, "delay_ms": rng.choice([20, 100, 300]),
                "jitter_ms": rng.choice([0, 50]), "seed": seed}
    if kind == "loss":
        return {"peer": a, "to": b, "loss": rng.choice([0.05, 0.2]), "seed": seed}
    if kind == "partition":
        return {"peers": rng.sample(names, max(1, len(names) // 3))}
    if kind == "reorg":
        return {"depth": rng.choice([1, 2, 3])}
    return {}


def _apply(kind: str) -> str:
    return "link" if kind in ("delay", "loss") else kind


class ChaosRunner(Runner):
    """A Runner whose timeline also holds the nemesis's faults."""

    def __init__(self, scenario: Scenario, run_dir: Path, chaos: ChaosPlan, progress=None):
        super().__init__(scenario, run_dir, progress)
        self.chaos = chaos

    def _play(self) -> None:
        timeline = [(p.at, "payment", p) for p in self.schedule]
        for f in self.chaos.faults:
            timeline.append((f.at, "fault", f))
            if f.heal_at is not None:
                timeline.append((f.heal_at, "heal", f))
        timeline.sort(key=lambda item: (item[0], item[1]))
        for at, what, item in timeline:
            delay = at - (time.monotonic() - self.actions.started)
            if delay > 0:
                time.sleep(delay)
            if what == "payment":
                self.actions.start_payment(item.kind, item.source, item.dest, item.amount_msat)
            else:
                self._fault(what, item)
        remaining = self.chaos.duration_s - (time.monotonic() - self.actions.started)
        if remaining > 0:
            time.sleep(remaining)

    def _fault(self, what: str, item: FaultEvent) -> None:
        self.progress(f"{what} {item.kind} {item.params}")
        try:
            if what == "fault":
                faults.inject(self.net, _apply(item.kind), **item.params)
                item.injected = True
            elif item.injected:
                faults.heal(self.net, _apply(item.kind), **item.params)
        except LnemuError as exc:  # e.g. the target is already down: the nemesis moves on
            item.error = f"{exc.__class__.__name__}: {exc}"

    def _settle(self) -> None:
        """Heal everything, mine past every expiry, wait until the network is quiet."""
        self.progress("healing")
        faults.heal_everything(self.net)
        self.net.wait_connected(60)
        names = [p.name for p in self.scenario.peers]

        def quiet() -> bool:
            self.net.chain.call("mine", n=1)
            channels = [ch for n in names for ch in self.net.rpc(n).call("listchannels")]
            pending = [s for s in self.actions.sent if s.payment_hash is not None and
                       self.actions.outcome(s)["status"] == "pending"]
            return not pending and all(ch.get("quiescent") or ch["state"] in
                                       ("CLOSED", "ABORTED") for ch in channels)
        wait_for(quiet, 180, what="payments resolved and every channel quiet or closed")
        self.net.wait_synced()
        self._sample()

    def _checks(self) -> list[Check]:
        return super()._checks() + [self._no_double_outcome()]

    def _no_double_outcome(self) -> Check:
        """No payment both succeeded and failed: the payer's verdict matches the payee."""
        wrong = []
        for sent in self.actions.sent:
            if sent.payment_hash is None or sent.kind != "invoice":
                continue
            status = self.actions.outcome(sent)["status"]
            invoices = {i["payment_hash"]: i for i in self.net.rpc(sent.dest).call(
                "listinvoices")}
            paid = invoices.get(sent.payment_hash, {}).get("status") == "paid"
            if (status == "succeeded") != paid:
                wrong.append(f"{sent.label}: payer says {status}, payee "
                             f"{'was paid' if paid else 'was not paid'}")
        return Check("payments: none both succeeded and failed (payer agrees with payee)",
                     not wrong, "; ".join(wrong[:5]) or "all agree")

    def _write_summary(self, result: Any) -> None:
        super()._write_summary(result)
        path = self.run_dir / "summary.json"
        summary = json.loads(path.read_text())
        summary["chaos"] = {"seed": self.chaos.seed, "duration_s": self.chaos.duration_s,
                            "scenario_path": self.scenario.path,
                            "faults": [asdict(f) for f in self.chaos.faults]}
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        report = self.run_dir / "report.md"
        if report.exists():
            with open(report, "a", encoding="utf-8") as fh:
                fh.write(fault_history_markdown(self.chaos))


def replay_plan(run_dir: Path) -> tuple[str, ChaosPlan]:
    """The scenario path and fault schedule recorded by an earlier chaos run."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    chaos = summary.get("chaos")
    if not chaos:
        raise LnemuError(f"{run_dir} is not a chaos run (no fault schedule in summary.json)",
                         code="bad_request")
    return chaos["scenario_path"], ChaosPlan(
        chaos["seed"], chaos["duration_s"],
        [FaultEvent(f["at"], f["kind"], f["params"], f["heal_at"]) for f in chaos["faults"]])


def fault_history_markdown(plan: Any) -> str:
    """The report.md section listing every fault of a chaos run, as it happened."""
    lines = ["", "## Fault history", "",
             f"Chaos seed {plan.seed}, {plan.duration_s:g} s of faults; times are seconds "
             "after the traffic started.", "",
             "| at (s) | fault | parameters | healed at (s) | outcome |",
             "|---:|---|---|---:|---|"]
    for f in plan.faults:
        params = ", ".join(f"{k}={v}" for k, v in f.params.items())
        healed = f"{f.heal_at:.1f}" if f.heal_at is not None else "-"
        outcome = "injected" if f.injected else "not injected"
        if f.error:
            outcome += f"; {f.error[:120]}"
        lines.append(f"| {f.at:.1f} | {f.kind} | {params or '-'} | {healed} | {outcome} |")
    if not plan.faults:
        lines.append("| - | no fault | - | - | - |")
    return "\n".join(lines) + "\n"
