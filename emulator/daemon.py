"""``lnemu up`` / ``lnemu down``: a network that stays up in the background.

``up`` validates the scenario, detaches a supervisor (a daemon with a pidfile in the
run directory), starts the chain and peers, opens the scenario's channels and writes
``network.json`` (every process's control endpoint and node id). Other verbs find the
network through that file. ``down`` asks the daemon to stop; everything it started
dies with it (the parent-death signal), so nothing is left behind.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from emulator.errors import LnemuError
from emulator.scenario import Scenario
from emulator.supervisor import daemonize, pid_alive, read_pidfile
from emulator.waiting import wait_for

DEFAULT_DIR = Path("runs/up")
PIDFILE, INFO, LOG = "supervisor.pid", "network.json", "supervisor.log"


class NotUp(LnemuError):
    code = "not_up"


def network_info(run_dir: Path) -> dict[str, Any]:
    """The endpoints of a network started by ``lnemu up``."""
    path = Path(run_dir) / INFO
    pid = read_pidfile(Path(run_dir) / PIDFILE)
    if not path.exists() or pid is None or not pid_alive(pid):
        raise NotUp(f"no network is up in {run_dir} (start one with `lnemu up SCENARIO`)")
    return json.loads(path.read_text())


def up(scenario: Scenario, run_dir: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Start the scenario's network in a detached supervisor; return its info."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / INFO).unlink(missing_ok=True)
    (run_dir / "failed").unlink(missing_ok=True)
    if daemonize(run_dir / PIDFILE, run_dir / LOG):
        _serve(scenario, run_dir)  # the daemon: never returns
    wait_for(lambda: (run_dir / INFO).exists() or (run_dir / "failed").exists(), timeout,
             what="the network to come up")
    if (run_dir / "failed").exists():
        raise LnemuError(f"the network did not come up: {(run_dir / 'failed').read_text()}")
    return json.loads((run_dir / INFO).read_text())


def _serve(scenario: Scenario, run_dir: Path) -> None:
    from emulator.actions import open_channels
    from emulator.network import Network
    from emulator.runner import peer_plans

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    net = Network(run_dir, seed=scenario.seed, block_interval=scenario.block_interval,
                  timers=scenario.timers)
    code = 0
    try:
        net.start(peer_plans(scenario))
        net.wait_connected()
        if scenario.channels:
            open_channels(net, [(c.a, c.b, c.capacity_sat, c.push_msat)
                                for c in scenario.channels])
        info = {"pid": os.getpid(), "scenario": scenario.name, "run_dir": str(run_dir),
                "chain": {"control": net.endpoint("chain", "ctl")},
                "peers": {p.name: {"control": net.endpoint(p.name, "ctl"),
                                   "node_id": net.node_id(p.name).hex()}
                          for p in scenario.peers}}
        tmp = run_dir / (INFO + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(run_dir / INFO)
        while not stop.wait(1.0):
            pass
    except Exception as exc:  # tell `lnemu up` why, then go
        (run_dir / "failed").write_text(f"{exc.__class__.__name__}: {exc}")
        code = 1
    finally:
        net.stop()
        (run_dir / INFO).unlink(missing_ok=True)
    os._exit(code)


def down(run_dir: Path, timeout: float = 30.0) -> int:
    """Stop the daemon of ``run_dir`` and wait until it (and so every child) is gone."""
    pid = read_pidfile(Path(run_dir) / PIDFILE)
    if pid is None or not pid_alive(pid):
        raise NotUp(f"no network is up in {run_dir}")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), timeout, what=f"supervisor {pid} to stop")
    return pid
