"""Shared fixtures: spec vectors, per-test directories, process factories."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VECTORS_DIRS = [REPO.parent / "shared" / "vectors", REPO / "tests" / "data"]


def load_vector(name: str):
    """Load a spec test-vector JSON file from ../shared/vectors (or tests/data)."""
    for d in VECTORS_DIRS:
        p = d / name
        if p.exists():
            return json.loads(p.read_text())
    raise FileNotFoundError(f"spec vector {name!r} not found in {[str(d) for d in VECTORS_DIRS]}")


@pytest.fixture
def vectors():
    return load_vector


# --- process fixtures (pyln-testing style: directory -> factory -> teardown checks) ---

UNEXPECTED_LOG_MARKERS = ("Traceback (most recent call last)", " ERROR ")


@pytest.fixture
def directory(tmp_path, request):
    """A directory per test; pytest keeps the latest ones, so failures can be read."""
    d = tmp_path / "run"
    d.mkdir()
    yield d


@pytest.fixture
def network_factory(directory):
    """Start networks (chain + peers); teardown reaps every process, then checks that
    none died unexpectedly and no log shows an unexpected error, and fails last."""
    from emulator.network import Network

    networks: list[Network] = []
    allowed_errors: list[str] = []

    def make(peers, seed=1, block_interval=0.0, timers="test", allow_errors=()):
        net = Network(directory / f"net{len(networks)}", seed=seed,
                      block_interval=block_interval, timers=timers)
        networks.append(net)
        allowed_errors.extend(allow_errors)
        net.start(peers)
        return net

    yield make
    problems = []
    for net in networks:
        deaths = net.sup.unexpected_deaths()
        net.stop()
        problems.extend(f"died: {d}" for d in deaths)
        for name, proc in net.sup.processes.items():
            log = proc.data_dir / "process.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if any(m in line for m in UNEXPECTED_LOG_MARKERS) and not any(
                        a in line for a in allowed_errors):
                    problems.append(f"{name}: {line.strip()}")
    if problems:
        pytest.fail("teardown found problems:\n" + "\n".join(problems[:20]))
