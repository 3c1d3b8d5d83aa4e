"""The scenario runner: start the network, open channels, play events and traffic,
check the invariants and expectations, write the report.

Every run gets a directory with each process's log, ``events.jsonl`` from the
collector, ``summary.json`` and ``report.md``. The exit code is 0 only when every
expectation and invariant holds.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator import invariants
from emulator.actions import Actions, Sent, open_channels
from emulator.errors import LnemuError
from emulator.invariants import Check
from emulator.network import Network, PeerPlan
from emulator.scenario import Scenario
from emulator.topology import Topo
from emulator.traffic import Payment, poisson_schedule, schedule_digest
from emulator.waiting import wait_for

Progress = Callable[[str], None]
SETTLE_TIMEOUT_S = 60.0


@dataclass
class RunResult:
    run_dir: Path
    checks: list[Check] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.checks)


def default_run_dir(scenario: Scenario, base: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{scenario.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(base) / f"{scenario.name}-{stamp}-{n}"
    return path


def traffic_schedule(scenario: Scenario) -> list[Payment]:
    """The scenario's payment schedule (the same for the same seed)."""
    spec = scenario.traffic
    if not spec:
        return []
    # a Topo carries each peer's role, so endpoints are weighted by capacity x role
    # (customers mostly pay, merchants mostly get paid); a plain mapping would not
    topo = Topo(name=scenario.name)
    for peer in scenario.peers:
        topo.add_peer(peer.name, role=peer.role)
    for ch in scenario.channels:
        topo.add_channel(ch.a, ch.b, ch.capacity_sat, ch.push_msat, ch.private)
    return poisson_schedule(topo, spec["rate_per_s"], spec["duration_s"],
                            spec.get("amount_mean_msat", 100_000_000),
                            spec.get("amount_sigma", 0.5), scenario.seed,
                            sources=spec.get("sources"), dests=spec.get("dests"),
                            kind=spec.get("payment_kind", "invoice"))


def peer_plans(scenario: Scenario) -> list[PeerPlan]:
    """Peers with the links their channels need (each pair dialled once)."""
    dials = {p.name: list(p.connect) for p in scenario.peers}
    linked = {frozenset((a, b)) for a, targets in dials.items() for b in targets}
    for ch in scenario.channels:
        if frozenset((ch.a, ch.b)) not in linked:
            dials[ch.a].append(ch.b)
            linked.add(frozenset((ch.a, ch.b)))
    return [PeerPlan(p.name, p.funds_sat, tuple(dials[p.name]), p.alias, p.fee_base_msat,
                     p.fee_proportional_millionths, p.cltv_expiry_delta,
                     watchtower=p.watchtower, tower=p.tower)
            for p in scenario.peers]


class Runner:
    """Plays one scenario on a fresh network."""

    def __init__(self, scenario: Scenario, run_dir: Path, progress: Progress | None = None):
        self.scenario = scenario
        self.run_dir = run_dir
        self.progress = progress or (lambda message: None)
        self.net: Network | None = None
        self.actions: Actions | None = None
        self.schedule = traffic_schedule(scenario)
        self.liquidity: list[Any] = []

    def run(self) -> RunResult:
        result = RunResult(self.run_dir)
        self.net = Network(self.run_dir, seed=self.scenario.seed,
                           block_interval=self.scenario.block_interval,
                           timers=self.scenario.timers)
        try:
            self._start()
            self._play()
            self.progress("settling")
            self._settle()
            self.progress("checking")
            result.checks = self._checks()
            result.balances = self.net.balances()
        except LnemuError as exc:
            result.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            deaths = self.net.sup.unexpected_deaths()
            result.checks.append(Check("no process died", not deaths, "; ".join(deaths) or
                                       "every process exited when asked"))
            try:
                self._report(result)
            finally:
                self.net.stop()
            self._write_summary(result)
        return result

    def _start(self) -> None:
        plans = peer_plans(self.scenario)
        self.progress(f"starting chain and {len(plans)} peers")
        self.net.start(plans)
        self.net.wait_connected()
        self.net.wait_synced()
        if self.scenario.channels:
            self.progress(f"opening {len(self.scenario.channels)} channels")
            open_channels(self.net, [(c.a, c.b, c.capacity_sat, c.push_msat, c.private)
                                     for c in self.scenario.channels])
            self._wait_gossip()
        self.actions = Actions(self.net, time.monotonic())
        self._sample()

    def _sample(self) -> None:
        from emulator.report import sample_liquidity
        if self.scenario.channels:
            self.liquidity.extend(sample_liquidity(self))

    def _wait_gossip(self) -> None:
        """Wait until every peer's graph holds every public channel (when gossip runs)."""
        public = sum(1 for c in self.scenario.channels if not c.private)
        names = [p.name for p in self.scenario.peers]

        def announced(name: str) -> int:
            """Public channels the peer can route over: announced, with both directions'
            policies (its own channels may show up earlier, unannounced or half-known)."""
            graph = self.net.rpc(name).call("listgraph")
            return len({c["short_channel_id"] for c in graph["channels"]
                        if not c.get("private") and c.get("policy_1") and c.get("policy_2")})

        def converged() -> bool:
            return all(announced(n) >= public for n in names)
        try:
            wait_for(converged, 60, what="gossip converged")
        except LnemuError as exc:
            if "unknown verb" not in str(exc):
                raise

    def _play(self) -> None:
        timeline = [(e.get("at", 0.0), i, "event", e)
                    for i, e in enumerate(self.scenario.events)]
        timeline += [(p.at, i, "payment", p) for i, p in enumerate(self.schedule)]
        timeline.sort(key=lambda item: (item[0], item[2] == "payment", item[1]))
        every = max(1, len(timeline) // 20)
        for n, (at, _, what, item) in enumerate(timeline, 1):
            if n % every == 0:
                self._sample()
            delay = at - (time.monotonic() - self.actions.started)
            if delay > 0:
                time.sleep(delay)  # follow the schedule
            if what == "event":
                self.progress(f"event {n}/{len(timeline)}: {item['action']}")
                self.actions.play(item)
            else:
                self.actions.start_payment(item.kind, item.source, item.dest, item.amount_msat)

    def _settle(self) -> None:
        """Let payments finish and every channel go quiet."""
        pending = [s for s in self.actions.sent if s.payment_hash is not None]
        wait_for(lambda: all(self.actions.outcome(s)["status"] != "pending" for s in pending),
                 SETTLE_TIMEOUT_S, what="every payment finished")
        self.net.wait_synced()
        self._sample()

    def _checks(self) -> list[Check]:
        names = [p.name for p in self.scenario.peers]
        worth = {n: invariants.peer_worth_msat(self.net, n) for n in names}
        height = self.net.chain.call("getheight")
        checks = invariants.chain_checks(self.net) + [
            invariants.wealth_check(self.net, worth),
            invariants.channel_agreement(self.net, names),
            invariants.no_stuck_htlcs(self.net, names, height),
            invariants.no_data_loss(self.net),
            invariants.no_forward_losses(self.net)]
        if not any(e["action"] in ("cheat",) for e in self.scenario.events):
            checks.append(invariants.no_channel_failures(self.net))
        return checks + self._expectations(worth)

    def _expectations(self, worth: dict[str, dict[str, int]]) -> list[Check]:
        from emulator.expectations import evaluate
        return evaluate(self.scenario.expect, self.net, self.actions, worth)

    def _report(self, result: RunResult) -> None:
        from emulator.report import collect_and_write
        result.summary = collect_and_write(self, result)

    def _write_summary(self, result: RunResult) -> None:
        from emulator.report import write_summary
        write_summary(self, result)


def run_scenario(scenario: Scenario, run_dir: Path | None = None,
                 progress: Progress | None = None) -> RunResult:
    """Run ``scenario`` in ``run_dir`` (default ``runs/NAME-TIME``)."""
    return Runner(scenario, run_dir or default_run_dir(scenario), progress).run()


def digest(schedule: list[Payment]) -> str:
    return schedule_digest(schedule)


__all__ = ["RunResult", "Runner", "Sent", "run_scenario", "traffic_schedule"]
