"""Scenario files (TOML): the network to start, what happens in it, what to expect.

Loading validates everything before any process starts. An unknown or misspelled
key is an error that names the key's path, its line in the file where it can be
found, and the nearest valid key. ``scenarios/README.md`` documents every key.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.errors import LnemuError


class ScenarioError(LnemuError):
    """A scenario that cannot be run; the message says where and why."""

    code = "bad_scenario"


NETWORK_KEYS = {"seed": int, "block_interval": float, "timers": str, "name": str,
                "description": str}
PEER_KEYS = {"name": str, "funds_sat": int, "connect": list, "alias": str}
EVENT_KEYS = {
    "sendonchain": {"action": str, "from": str, "to": str, "amount_sat": int,
                    "feerate_sat_per_kb": int},
    "mine": {"action": str, "blocks": int},
    "wait": {"action": str, "seconds": float},
}
EXPECT_KEYS = {
    "balance": {"kind": str, "peer": str, "min_sat": int, "max_sat": int},
    "invariants": {"kind": str},
}
TOP_KEYS = {"network": dict, "peers": list, "events": list, "expect": list}
MAX_FUNDS_SAT = 21_000_000 * 100_000_000


@dataclass
class PeerSpec:
    name: str
    funds_sat: int = 0
    connect: list[str] = field(default_factory=list)
    alias: str = ""


@dataclass
class Scenario:
    name: str
    seed: int
    block_interval: float
    timers: str
    peers: list[PeerSpec]
    events: list[dict[str, Any]]
    expect: list[dict[str, Any]]
    description: str = ""
    path: str = ""

    def peer(self, name: str) -> PeerSpec:
        for p in self.peers:
            if p.name == name:
                return p
        raise ScenarioError(f"unknown peer {name!r}")


class _Checker:
    """Walks the parsed TOML, checking keys and types, with line numbers from the text."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, key: str) -> int | None:
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line) or line.strip() in (f"[{key}]", f"[[{key}]]"):
                return number
        return None

    def fail(self, path: str, message: str, key: str | None = None) -> None:
        line = self.line_of(key) if key else None
        where = f"{self.source}:{line}" if line else self.source
        raise ScenarioError(f"{where}: {path}: {message}")

    def keys(self, table: Any, allowed: dict[str, type], path: str,
               required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.fail(path, "must be a table")
        for key, value in table.items():
            if key not in allowed:
                near = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
                hint = f"; did you mean {near[0]!r}?" if near else \
                    f"; valid keys: {', '.join(sorted(allowed))}"
                self.fail(f"{path}.{key}", f"unknown key{hint}", key)
            want = allowed[key]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                if want is float else isinstance(value, want) and not (
                    want is int and isinstance(value, bool))
            if not ok:
                self.fail(f"{path}.{key}", f"must be {want.__name__}, got {value!r}", key)
        for key in required:
            if key not in table:
                self.fail(path, f"missing required key {key!r}")
        return table


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError naming what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate scenario TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    check = _Checker(text, source)
    check.keys(data, TOP_KEYS, "scenario", required=("peers",))
    net = check.keys(data.get("network", {}), NETWORK_KEYS, "network")
    peers = _parse_peers(check, data["peers"])
    names = {p.name for p in peers}
    events = [_parse_event(check, i, e, names) for i, e in enumerate(data.get("events", []))]
    expect = [_parse_expect(check, i, e, names) for i, e in enumerate(data.get("expect", []))]
    timers = net.get("timers", "test")
    if timers not in ("test", "spec"):
        check.fail("network.timers", f"must be 'test' or 'spec', got {timers!r}", "timers")
    interval = float(net.get("block_interval", 1.0))
    if not 0 <= interval <= 3600:
        check.fail("network.block_interval", "must be between 0 and 3600 seconds",
                   "block_interval")
    return Scenario(name=net.get("name", Path(source).stem), seed=net.get("seed", 1),
                    block_interval=interval, timers=timers, peers=peers, events=events,
                    expect=expect, description=net.get("description", ""), path=source)


def _parse_peers(check: _Checker, raw: list) -> list[PeerSpec]:
    peers: list[PeerSpec] = []
    for i, entry in enumerate(raw):
        where = f"peers[{i}]"
        check.keys(entry, PEER_KEYS, where, required=("name",))
        name = entry["name"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
            check.fail(f"{where}.name", f"{name!r} must be a letter then up to 31 "
                       "letters, digits, '-' or '_'", "name")
        if any(p.name == name for p in peers):
            check.fail(f"{where}.name", f"duplicate peer name {name!r}", "name")
        funds = entry.get("funds_sat", 0)
        if not 0 <= funds <= MAX_FUNDS_SAT:
            check.fail(f"{where}.funds_sat", f"{funds} is outside 0..{MAX_FUNDS_SAT}",
                       "funds_sat")
        peers.append(PeerSpec(name, funds, list(entry.get("connect", [])),
                              entry.get("alias", name)))
    names = {p.name for p in peers}
    for i, p in enumerate(peers):
        for other in p.connect:
            if other not in names or other == p.name:
                check.fail(f"peers[{i}].connect", f"unknown peer {other!r}"
                           + _nearest(other, names), "connect")
    return peers


def _nearest(word: str, options: set[str]) -> str:
    near = difflib.get_close_matches(str(word), sorted(options), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def _parse_event(check: _Checker, i: int, raw: Any, names: set[str]) -> dict[str, Any]:
    where = f"events[{i}]"
    if not isinstance(raw, dict) or "action" not in raw:
        check.fail(where, "needs an 'action'")
    action = raw["action"]
    if action not in EVENT_KEYS:
        check.fail(f"{where}.action", f"unknown action {action!r}"
                   + _nearest(action, set(EVENT_KEYS)), "action")
    check.keys(raw, EVENT_KEYS[action], where)
    for role in ("from", "to"):
        if role in raw and raw[role] not in names:
            check.fail(f"{where}.{role}", f"unknown peer {raw[role]!r}"
                       + _nearest(raw[role], names), role)
    if action == "sendonchain":
        for key in ("from", "to", "amount_sat"):
            if key not in raw:
                check.fail(where, f"sendonchain needs {key!r}")
        if not 0 < raw["amount_sat"] <= MAX_FUNDS_SAT:
            check.fail(f"{where}.amount_sat", f"{raw['amount_sat']} is not a sane amount",
                       "amount_sat")
    if action == "wait" and not 0 <= raw.get("seconds", 0) <= 86_400:
        check.fail(f"{where}.seconds", "must be from 0 to 86400", "seconds")
    if action == "mine" and not 1 <= raw.get("blocks", 1) <= 10_000:
        check.fail(f"{where}.blocks", "must be from 1 to 10000", "blocks")
    return dict(raw)


def _parse_expect(check: _Checker, i: int, raw: Any, names: set[str]) -> dict[str, Any]:
    where = f"expect[{i}]"
    if not isinstance(raw, dict) or "kind" not in raw:
        check.fail(where, "needs a 'kind'")
    kind = raw["kind"]
    if kind not in EXPECT_KEYS:
        check.fail(f"{where}.kind", f"unknown expectation {kind!r}"
                   + _nearest(kind, set(EXPECT_KEYS)), "kind")
    check.keys(raw, EXPECT_KEYS[kind], where)
    if kind == "balance" and raw.get("peer") not in names:
        check.fail(f"{where}.peer", f"unknown peer {raw.get('peer')!r}", "peer")
    return dict(raw)
