"""A running network: the chain process and peer processes of one run directory.

The runner, the CLI and the tests all start networks through this class, so that
configuration, key derivation from the seed and process supervision live in one
place. Processes are launched as ``python -m l1chain`` / ``python -m peers``; this
module never imports their internals.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator import identity
from emulator.errors import NotFound
from emulator.rpc import RpcClient
from emulator.supervisor import ManagedProcess, Supervisor
from emulator.waiting import wait_for


@dataclass(frozen=True)
class PeerPlan:
    """A peer to start: its name, genesis funds, the peers it dials, its fee policy."""

    name: str
    funds_sat: int = 0
    connect: tuple[str, ...] = ()
    alias: str = ""
    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 1
    cltv_expiry_delta: int | None = None
    watchtower: str | None = None  # the name of this peer's watchtower (a tower peer)
    tower: bool = False  # this peer is a watchtower


class Network:
    """Starts, queries and stops the processes of one run.

    Processes are forked by a fork server (lnemu's modules imported once, their pages
    shared) unless ``forkserver=False``: then each is a fresh ``python -m``.
    """

    def __init__(self, run_dir: str | Path, seed: int = 1, block_interval: float = 0.0,
                 timers: str = "test", forkserver: bool = True) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.seed = seed
        self.block_interval = block_interval
        self.timers = timers
        self.sup = Supervisor(self.run_dir, forkserver=forkserver)
        self.plans: dict[str, PeerPlan] = {}
        self._clients: dict[str, RpcClient] = {}
        self.supply_sat = 0

    # --- keys and endpoints -------------------------------------------------------
    def node_secret(self, name: str) -> bytes:
        return identity.node_secret(self.seed, name)

    def node_id(self, name: str) -> bytes:
        """The node id of peer ``name`` (derived from the seed)."""
        return identity.pubkey(self.node_secret(name))

    def wallet_key(self, name: str, index: int = 0) -> bytes:
        return identity.pubkey(identity.wallet_secret(self.node_secret(name), index))

    @property
    def miner_key(self) -> bytes:
        return identity.pubkey(identity.miner_secret(self.seed))

    def endpoint(self, name: str, purpose: str) -> str:
        return self.sup.endpoint(f"{name}.{purpose}")

    # --- starting -------------------------------------------------------------------
    def start(self, peers: list[PeerPlan], ready_timeout: float = 30.0) -> None:
        """Start the chain (funding each peer at genesis), then every peer."""
        for plan in peers:
            self.plans[plan.name] = plan
        self.start_chain(ready_timeout)
        procs = [self._add_peer(plan) for plan in peers]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready(ready_timeout)

    def start_chain(self, ready_timeout: float = 30.0) -> ManagedProcess:
        allocations = [{"pubkey": self.wallet_key(p.name).hex(), "amount_sat": p.funds_sat}
                       for p in self.plans.values() if p.funds_sat > 0]
        self.supply_sat = sum(a["amount_sat"] for a in allocations)
        config = {"control": self.endpoint("chain", "ctl"),
                  "blocks": self.endpoint("chain", "pub"),
                  "data_dir": str(self.run_dir / "chain"),
                  "miner_pubkey": self.miner_key.hex(), "allocations": allocations,
                  "block_interval": self.block_interval, "events": self.sup.events_endpoint,
                  "parent_pid": os.getpid()}
        proc = self.sup.add("chain", self._argv("l1chain", "chain", config))
        proc.start()
        proc.wait_ready(ready_timeout)
        return proc

    def _add_peer(self, plan: PeerPlan) -> ManagedProcess:
        connect = [{"node_id": self.node_id(other).hex(),
                    "endpoint": self.endpoint(other, "p2p")} for other in plan.connect]
        config = {"name": plan.name, "data_dir": str(self.run_dir / plan.name),
                  "p2p": self.endpoint(plan.name, "p2p"),
                  "control": self.endpoint(plan.name, "ctl"),
                  "chain_control": self.endpoint("chain", "ctl"),
                  "chain_blocks": self.endpoint("chain", "pub"),
                  "node_secret": self.node_secret(plan.name).hex(),
                  "events": self.sup.events_endpoint, "parent_pid": os.getpid(),
                  "connect": connect, "timers": self.timers, "alias": plan.alias or plan.name,
                  "fee_base_msat": plan.fee_base_msat,
                  "fee_proportional_millionths": plan.fee_proportional_millionths,
                  "cltv_expiry_delta": plan.cltv_expiry_delta,
                  "watchtower": self._tower_of(plan), "tower": plan.tower}
        return self.sup.add(plan.name, self._argv("peers", plan.name, config))

    def _tower_of(self, plan: PeerPlan) -> dict[str, str] | None:
        if plan.watchtower is None:
            return None
        if plan.watchtower not in self.plans:
            raise NotFound(f"{plan.name}'s watchtower {plan.watchtower!r} is not a peer of "
                           f"this network; peers: {', '.join(self.plans)}")
        return {"node_id": self.node_id(plan.watchtower).hex(),
                "endpoint": self.endpoint(plan.watchtower, "p2p")}

    def _argv(self, module: str, name: str, config: dict[str, Any]) -> list[str]:
        path = self.run_dir / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return [sys.executable, "-m", module, "--config", str(path)]

    # --- talking to processes ---------------------------------------------------------
    def rpc(self, name: str) -> RpcClient:
        """A control-RPC client for ``chain`` or a peer by name."""
        if name not in self._clients:
            if name != "chain" and name not in self.plans:
                raise NotFound(f"unknown peer {name!r}; peers: {', '.join(self.plans)}")
            self._clients[name] = RpcClient(self.endpoint(name, "ctl"))
        return self._clients[name]

    @property
    def chain(self) -> RpcClient:
        return self.rpc("chain")

    def process(self, name: str) -> ManagedProcess:
        return self.sup.processes[name]

    def restart(self, name: str, *, died_on_purpose: bool = False,
                ready_timeout: float = 30.0) -> None:
        """Start ``name`` again from its data directory (after a crash point or a kill)."""
        proc = self.process(name)
        if proc.running:
            proc.stop()
        elif died_on_purpose:
            proc.expected_exit = True
        proc.start()
        proc.wait_ready(ready_timeout)

    def wait_dead(self, name: str, timeout: float = 20.0) -> int:
        """Wait until ``name`` has exited (e.g. at a crash point); its exit code."""
        proc = self.process(name)
        wait_for(lambda: not proc.running, timeout, what=f"{name} to exit")
        return proc.returncode

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until every configured link is up on both ends."""
        def all_up() -> bool:
            for plan in self.plans.values():
                peers = {p["node_id"]: p for p in self.rpc(plan.name).call("listpeers")}
                for other in plan.connect:
                    link = peers.get(self.node_id(other))
                    if link is None or not link["connected"]:
                        return False
            return True
        wait_for(all_up, timeout, what="all configured links connected")

    def wait_synced(self, timeout: float = 20.0) -> int:
        """Wait until every peer has seen the chain's tip; return the height."""
        height = self.chain.call("getheight")
        wait_for(lambda: all(self.rpc(n).call("getinfo")["blockheight"] >= height
                             for n in self.plans), timeout, what=f"peers synced to {height}")
        return height

    def balances(self) -> dict[str, int]:
        """Confirmed on-chain balance of each peer, in sat."""
        return {n: self.rpc(n).call("walletbalance")["confirmed_sat"] for n in self.plans}

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every process; close clients."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        return self.sup.close(timeout)
