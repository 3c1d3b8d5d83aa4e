"""Scenario files: validation names the bad key, its line and the nearest valid key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulator.scenario import ScenarioError, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[1]

BASE = """[network]
seed = 7

[[peers]]
name = "alice"
funds_sat = 1000

[[peers]]
name = "bob"
"""


def test_demo_scenario_loads():
    spec = load_scenario(REPO / "scenarios/demo.toml")
    assert [p.name for p in spec.peers] == ["alice", "bob", "carol"]
    assert spec.seed == 42 and spec.events[0]["action"] == "sendonchain"


@pytest.mark.parametrize("text,needles", [
    (BASE.replace("seed = 7", "sede = 7"), ["network.sede", ":2:", "'seed'"]),
    (BASE.replace("funds_sat = 1000", "fund_sat = 1000"), ["peers[0].fund_sat", ":6:",
                                                           "'funds_sat'"]),
    (BASE + '[[events]]\naction = "sendonchian"\n', ["events[0].action", "'sendonchain'"]),
    (BASE + '[[events]]\naction = "sendonchain"\nfrom = "alice"\nto = "bobb"\namount_sat = 5\n',
     ["events[0].to", "'bobb'", "'bob'"]),
    (BASE + '[[events]]\naction = "sendonchain"\nfrom = "alice"\nto = "bob"\n'
     'amount_sat = 99999999999999999\n', ["amount_sat", "not a sane amount"]),
    (BASE.replace("seed = 7", 'seed = "x"'), ["network.seed", "must be int"]),
    (BASE + '[[peers]]\nname = "alice"\n', ["duplicate peer name"]),
    (BASE + "[[expect]]\nkind = \"balanse\"\n", ["expect[0].kind", "'balance'"]),
    (BASE + '[[events]]\naction = "fault"\nfault = "kil"\npeer = "bob"\n',
     ["events[0].fault", "unknown fault 'kil'", "'kill'"]),
    (BASE + '[[events]]\naction = "fault"\nfault = "kill"\npeer = "bob"\ndepth = 2\n',
     ["events[0].depth", "fault 'kill' takes no 'depth'", "it takes: peer"]),
    (BASE + '[[events]]\naction = "fault"\nfault = "kill"\n', ["fault 'kill' needs 'peer'"]),
    (BASE + '[[events]]\naction = "fault"\nfault = "partition"\npeers = ["bob", "carl"]\n',
     ["events[0].peers", "unknown peer 'carl'"]),
    (BASE + '[[events]]\naction = "heal"\nfault = "reorg"\n', ["fault 'reorg' needs no heal"]),
    (BASE + '[[expect]]\nkind = "breach"\npunnished = false\n',
     ["expect[0].punnished", "'punished'"]),
    ("[network\n", ["not valid TOML"]),
    ("[network]\nseed = 1\n", ["missing required key 'peers'"]),
])
def test_bad_scenarios_name_what_is_wrong(text, needles):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "s.toml")
    for needle in needles:
        assert needle in str(info.value)


def test_cli_refuses_a_misspelled_key_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace("seed = 7", "sede = 7"))
    proc = subprocess.run([sys.executable, "-m", "emulator.cli", "run", str(bad),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "network.sede" in proc.stderr and "did you mean 'seed'" in proc.stderr
    assert not (tmp_path / "out").exists()
