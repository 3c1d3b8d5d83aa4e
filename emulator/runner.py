"""The scenario runner: start the network, play the events, check, report.

Every run gets a directory with each process's log, ``events.jsonl`` from the
collector and ``summary.json``. The exit code is 0 only when every expectation
and invariant holds.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator.envelope import to_plain
from emulator.errors import LnemuError
from emulator.network import Network, PeerPlan
from emulator.scenario import Scenario
from emulator.waiting import wait_for

Progress = Callable[[str], None]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class RunResult:
    run_dir: Path
    checks: list[Check] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)
    error: str = ""

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


class Runner:
    """Plays one scenario on a fresh network."""

    def __init__(self, scenario: Scenario, run_dir: Path, progress: Progress | None = None):
        self.scenario = scenario
        self.run_dir = run_dir
        self.progress = progress or (lambda message: None)
        self.net: Network | None = None
        self.expected_sat: dict[str, int] = {p.name: p.funds_sat for p in scenario.peers}
        self.fees_sat = 0

    def run(self) -> RunResult:
        result = RunResult(self.run_dir)
        self.net = Network(self.run_dir, seed=self.scenario.seed,
                           block_interval=self.scenario.block_interval,
                           timers=self.scenario.timers)
        try:
            self._start()
            for i, event in enumerate(self.scenario.events):
                self.progress(f"event {i + 1}/{len(self.scenario.events)}: {event['action']}")
                self._play(event)
            self.progress("checking")
            self.net.wait_synced()
            result.balances = self.net.balances()
            result.checks = self._invariants(result.balances) + self._expectations(
                result.balances)
        except LnemuError as exc:
            result.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            deaths = self.net.sup.unexpected_deaths()
            self.net.stop()
            result.checks.append(Check("no process died", not deaths, "; ".join(deaths) or
                                       "every process exited when asked"))
            self._write_summary(result)
        return result

    def _start(self) -> None:
        plans = [PeerPlan(p.name, p.funds_sat, tuple(p.connect), p.alias)
                 for p in self.scenario.peers]
        self.progress(f"starting chain and {len(plans)} peers")
        self.net.start(plans)
        self.progress("connecting peers")
        self.net.wait_connected()
        self.net.wait_synced()

    def _play(self, event: dict[str, Any]) -> None:
        action = event["action"]
        if action == "mine":
            self.net.chain.call("mine", n=event.get("blocks", 1))
        elif action == "wait":  # let emulated time pass (blocks keep coming)
            time.sleep(event.get("seconds", 0))
        elif action == "sendonchain":
            self._send_on_chain(event)
        else:  # the scenario loader rejects unknown actions before we get here
            raise LnemuError(f"unknown action {action!r}")

    def _send_on_chain(self, event: dict[str, Any]) -> None:
        args = {"address": self.net.wallet_key(event["to"]), "amount_sat": event["amount_sat"]}
        if "feerate_sat_per_kb" in event:
            args["feerate_sat_per_kb"] = event["feerate_sat_per_kb"]
        sent = self.net.rpc(event["from"]).call("sendonchain", **args)
        self.expected_sat[event["from"]] -= event["amount_sat"] + sent["fee_sat"]
        self.expected_sat[event["to"]] += event["amount_sat"]
        self.fees_sat += sent["fee_sat"]

        def confirmed() -> bool:
            if self.scenario.block_interval == 0:
                self.net.chain.call("mine", n=1)
            return self.net.chain.call("gettx", txid=sent["txid"])["status"] == "confirmed"
        wait_for(confirmed, 30, what=f"transaction {sent['txid'].hex()} confirmed")

    def _invariants(self, balances: dict[str, int]) -> list[Check]:
        verify = self.net.chain.call("verify")
        miner = sum(c["amount_sat"] for c in
                    self.net.chain.call("listunspent", pubkey=self.net.miner_key))
        total = sum(balances.values()) + miner
        wrong = {n: (balances[n], want) for n, want in self.expected_sat.items()
                 if balances[n] != want}
        return [
            Check("chain: UTXO set rebuilt from blocks matches, sum = genesis supply",
                  verify["ok"], json.dumps(to_plain(verify))),
            Check("wealth: peers + miner = genesis supply", total == self.net.supply_sat,
                  f"peers {sum(balances.values())} + miner {miner} = {total}, "
                  f"supply {self.net.supply_sat}"),
            Check("wealth: each peer changed by exactly its own payments and fees", not wrong,
                  "all as recorded" if not wrong else
                  "; ".join(f"{n}: has {h}, expected {w}" for n, (h, w) in wrong.items())),
            Check("miner earned exactly the fees paid", miner == self.fees_sat,
                  f"miner {miner} sat, fees {self.fees_sat} sat"),
        ]

    def _expectations(self, balances: dict[str, int]) -> list[Check]:
        checks = []
        for exp in self.scenario.expect:
            if exp["kind"] == "balance":
                have = balances[exp["peer"]]
                low, high = exp.get("min_sat", 0), exp.get("max_sat", 2**63)
                checks.append(Check(f"expect: {exp['peer']} balance in [{low}, {high}]",
                                    low <= have <= high, f"{have} sat"))
            # "invariants" is satisfied by the invariant checks every run makes
        return checks

    def _write_summary(self, result: RunResult) -> None:
        summary = {"scenario": self.scenario.name, "seed": self.scenario.seed,
                   "run_dir": str(result.run_dir), "ok": result.ok, "error": result.error,
                   "node_ids": {p.name: self.net.node_id(p.name).hex()
                                for p in self.scenario.peers},
                   "balances_sat": result.balances,
                   "checks": [asdict(c) for c in result.checks]}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def run_scenario(scenario: Scenario, run_dir: Path | None = None,
                 progress: Progress | None = None) -> RunResult:
    """Run ``scenario`` in ``run_dir`` (default ``runs/NAME-TIME``)."""
    return Runner(scenario, run_dir or default_run_dir(scenario), progress).run()


def wait_for_events(net: Network, kind: str, count: int = 1, timeout: float = 10.0
                    ) -> list[dict[str, Any]]:
    """Wait until the collector has seen ``count`` events of ``kind``."""
    return wait_for(lambda: (evs := net.sup.collector.events(kind=kind)) and
                    len(evs) >= count and evs, timeout, what=f"{count} {kind} event(s)")
