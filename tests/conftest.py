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
