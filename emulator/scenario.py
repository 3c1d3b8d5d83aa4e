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
PEER_KEYS = {"name": str, "funds_sat": int, "connect": list, "alias": str, "role": str,
             "fee_base_msat": int, "fee_proportional_millionths": int,
             "cltv_expiry_delta": int, "watchtower": str, "tower": bool}
CHANNEL_KEYS = {"a": str, "b": str, "capacity_sat": int, "push_msat": int, "private": bool,
                "fee_base_msat": int, "fee_proportional_millionths": int,
                "cltv_expiry_delta": int}
_ACT = {"action": str, "label": str, "at": float}
_PAYMENT = {**_ACT, "from": str, "to": str, "amount_msat": int, "expect": str}
EVENT_KEYS = {
    "sendonchain": {**_ACT, "from": str, "to": str, "amount_sat": int,
                    "feerate_sat_per_kb": int},
    "mine": {**_ACT, "blocks": int},
    "wait": {**_ACT, "seconds": float},
    "pay": _PAYMENT,
    "keysend": _PAYMENT,
    "message": {**_PAYMENT, "text": str},
    "open_channel": {**_ACT, "from": str, "to": str, "capacity_sat": int, "push_msat": int},
    "close_channel": {**_ACT, "from": str, "to": str, "force": bool},
    "cheat": {**_ACT, "from": str, "to": str, "states_back": int},
    "hold": {**_ACT, "peer": str, "on": bool},
    # any fault of the catalogue (emulator/faults.py), with its parameters, and its heal
    "fault": {**_ACT, "fault": str, "peer": str, "to": str, "peers": list, "seed": int,
              "delay_ms": float, "jitter_ms": float, "loss": float, "duplicate": float,
              "reorder": float, "depth": int, "txid": str, "blocks": int,
              "min_feerate_sat_per_kb": int, "on": bool, "count": int},
    "heal": {**_ACT, "fault": str, "peer": str},
}
EXPECT_KEYS = {
    "balance": {"kind": str, "peer": str, "min_sat": int, "max_sat": int},
    "channel_balance": {"kind": str, "peer": str, "with": str, "min_msat": int,
                        "max_msat": int},
    "success_rate": {"kind": str, "min": float},
    "payment": {"kind": str, "label": str, "status": str},
    "message_delivered": {"kind": str, "to": str, "text": str},
    "penalty": {"kind": str, "min": int},
    "breach": {"kind": str, "punished": bool, "by": str},
    "invariants": {"kind": str},
}
TRAFFIC_KEYS = {"kind": str, "rate_per_s": float, "duration_s": float,
                "amount_mean_msat": int, "amount_sigma": float, "sources": list,
                "dests": list, "payment_kind": str}
TOP_KEYS = {"network": dict, "peers": list, "channels": list, "events": list,
            "expect": list, "traffic": dict}
ROLES = ("customer", "merchant", "router", "lsp")
MIN_CHANNEL_SAT, MAX_CHANNEL_SAT = 20_000, 2**24 - 1
MAX_FUNDS_SAT = 21_000_000 * 100_000_000


@dataclass
class PeerSpec:
    name: str
    funds_sat: int = 0
    connect: list[str] = field(default_factory=list)
    alias: str = ""
    role: str = "router"
    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 1
    cltv_expiry_delta: int | None = None
    watchtower: str | None = None  # the name of the tower peer that watches for us
    tower: bool = False  # this peer runs a watchtower


@dataclass
class ChannelSpec:
    a: str
    b: str
    capacity_sat: int
    push_msat: int = 0
    private: bool = False


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
    channels: list[ChannelSpec] = field(default_factory=list)
    traffic: dict[str, Any] | None = None

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
    channels = [_parse_channel(check, i, c, names)
                for i, c in enumerate(data.get("channels", []))]
    traffic = _parse_traffic(check, data["traffic"], names) if "traffic" in data else None
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
                    expect=expect, description=net.get("description", ""), path=source,
                    channels=channels, traffic=traffic)


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
        role = entry.get("role", "router")
        if role not in ROLES:
            check.fail(f"{where}.role", f"unknown role {role!r}" + _nearest(role, set(ROLES)),
                       "role")
        peers.append(PeerSpec(name, funds, list(entry.get("connect", [])),
                              entry.get("alias", name), role,
                              entry.get("fee_base_msat", 1000),
                              entry.get("fee_proportional_millionths", 1),
                              entry.get("cltv_expiry_delta"), entry.get("watchtower"),
                              entry.get("tower", False)))
    names = {p.name for p in peers}
    for i, p in enumerate(peers):
        for other in p.connect:
            if other not in names or other == p.name:
                check.fail(f"peers[{i}].connect", f"unknown peer {other!r}"
                           + _nearest(other, names), "connect")
        _check_watchtower(check, i, p, peers)
    return peers


def _check_watchtower(check: _Checker, i: int, peer: PeerSpec, peers: list[PeerSpec]) -> None:
    """A peer's ``watchtower`` names another peer, one with ``tower = true``."""
    if peer.watchtower is None:
        return
    is_tower = {p.name: p.tower for p in peers}
    where = f"peers[{i}].watchtower"
    if peer.watchtower == peer.name:
        check.fail(where, "a peer cannot be its own watchtower", "watchtower")
    if peer.watchtower not in is_tower:
        check.fail(where, f"unknown peer {peer.watchtower!r}"
                   + _nearest(peer.watchtower, set(is_tower)), "watchtower")
    if not is_tower[peer.watchtower]:
        check.fail(where, f"peer {peer.watchtower!r} is not a tower (give it tower = true)",
                   "watchtower")


def _parse_channel(check: _Checker, i: int, raw: Any, names: set[str]) -> ChannelSpec:
    where = f"channels[{i}]"
    check.keys(raw, CHANNEL_KEYS, where, required=("a", "b", "capacity_sat"))
    for end in ("a", "b"):
        if raw[end] not in names:
            check.fail(f"{where}.{end}", f"unknown peer {raw[end]!r}" + _nearest(raw[end], names),
                       end)
    if raw["a"] == raw["b"]:
        check.fail(where, "a channel needs two different peers")
    if not MIN_CHANNEL_SAT <= raw["capacity_sat"] <= MAX_CHANNEL_SAT:
        check.fail(f"{where}.capacity_sat", f"must be from {MIN_CHANNEL_SAT} to "
                   f"{MAX_CHANNEL_SAT}", "capacity_sat")
    push = raw.get("push_msat", 0)
    if not 0 <= push <= raw["capacity_sat"] * 500:
        check.fail(f"{where}.push_msat", "must be from 0 to half the capacity", "push_msat")
    return ChannelSpec(raw["a"], raw["b"], raw["capacity_sat"], push, raw.get("private", False))


def _parse_traffic(check: _Checker, raw: Any, names: set[str]) -> dict[str, Any]:
    check.keys(raw, TRAFFIC_KEYS, "traffic", required=("rate_per_s", "duration_s"))
    if raw.get("kind", "poisson") != "poisson":
        check.fail("traffic.kind", "only 'poisson' traffic is supported", "kind")
    if not 0 < raw["rate_per_s"] <= 1000 or not 0 < raw["duration_s"] <= 3600:
        check.fail("traffic", "rate_per_s must be in (0, 1000] and duration_s in (0, 3600]")
    for key in ("sources", "dests"):
        for name in raw.get(key, []):
            if name not in names:
                check.fail(f"traffic.{key}", f"unknown peer {name!r}" + _nearest(name, names),
                           key)
    return dict(raw)


def _nearest(word: str, options: set[str]) -> str:
    near = difflib.get_close_matches(str(word), sorted(options), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def _parse_event(check: _Checker, i: int, raw: Any, names: set[str]) -> dict[str, Any]:
    where = f"events[{i}]"
    action = _tagged(check, where, raw, "action", EVENT_KEYS, names, ("from", "to", "peer"))
    needs = {"sendonchain": ("from", "to", "amount_sat"), "pay": ("from", "to", "amount_msat"),
             "keysend": ("from", "to", "amount_msat"), "message": ("from", "to", "text"),
             "open_channel": ("from", "to", "capacity_sat"), "close_channel": ("from", "to"),
             "cheat": ("from", "to"), "hold": ("peer",)}.get(action, ())
    for key in needs:
        if key not in raw:
            check.fail(where, f"{action} needs {key!r}")
    if action == "sendonchain" and not 0 < raw["amount_sat"] <= MAX_FUNDS_SAT:
        check.fail(f"{where}.amount_sat", f"{raw['amount_sat']} is not a sane amount",
                   "amount_sat")
    if "amount_msat" in raw and not 0 < raw["amount_msat"] <= MAX_FUNDS_SAT * 1000:
        check.fail(f"{where}.amount_msat", f"{raw['amount_msat']} is not a sane amount",
                   "amount_msat")
    if raw.get("expect", "succeeded") not in ("succeeded", "failed", "any"):
        check.fail(f"{where}.expect", "must be 'succeeded', 'failed' or 'any'", "expect")
    if action == "wait" and not 0 <= raw.get("seconds", 0) <= 86_400:
        check.fail(f"{where}.seconds", "must be from 0 to 86400", "seconds")
    if action == "mine" and not 1 <= raw.get("blocks", 1) <= 10_000:
        check.fail(f"{where}.blocks", "must be from 1 to 10000", "blocks")
    if action in ("fault", "heal"):
        _check_fault(check, where, raw, names)
    return dict(raw)


def _check_fault(check: _Checker, where: str, raw: dict[str, Any], names: set[str]) -> None:
    """A fault event names a fault of the catalogue and only parameters it takes."""
    import inspect

    from emulator.faults import CATALOGUE, HEALS
    kind = raw.get("fault")
    known = set(CATALOGUE) | ({"everything"} if raw["action"] == "heal" else set())
    if kind not in known:
        check.fail(f"{where}.fault", f"unknown fault {kind!r}" + _nearest(kind, known) +
                   f"; faults: {', '.join(sorted(known))}", "fault")
    if raw["action"] == "heal":
        if kind != "everything" and kind not in HEALS:
            check.fail(f"{where}.fault", f"fault {kind!r} needs no heal", "fault")
        return
    params = inspect.signature(CATALOGUE[kind]).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in raw:
        if key not in _ACT and key != "fault" and key not in params and not takes_any:
            check.fail(f"{where}.{key}", f"fault {kind!r} takes no {key!r}; it takes: "
                       f"{', '.join(k for k in params if k != 'net') or 'nothing'}", key)
    for key, param in params.items():
        if key != "net" and param.default is param.empty and key not in raw:
            check.fail(where, f"fault {kind!r} needs {key!r}")
    for peer in raw.get("peers", []):
        if peer not in names:
            check.fail(f"{where}.peers", f"unknown peer {peer!r}" + _nearest(peer, names),
                       "peers")


def _parse_expect(check: _Checker, i: int, raw: Any, names: set[str]) -> dict[str, Any]:
    _tagged(check, f"expect[{i}]", raw, "kind", EXPECT_KEYS, names, ("peer", "with", "to"))
    return dict(raw)


def _tagged(check: _Checker, where: str, raw: Any, tag: str,
            table: dict[str, dict[str, type]], names: set[str],
            peer_keys: tuple[str, ...]) -> str:
    """Check a table whose keys depend on its ``tag`` (an event's action, an
    expectation's kind), and the peers it names; return the tag."""
    if not isinstance(raw, dict) or tag not in raw:
        check.fail(where, f"needs a {tag!r}")
    value = raw[tag]
    if value not in table:
        check.fail(f"{where}.{tag}", f"unknown {tag} {value!r}" + _nearest(value, set(table)),
                   tag)
    check.keys(raw, table[value], where)
    for key in peer_keys:
        if key in raw and raw[key] not in names:
            check.fail(f"{where}.{key}", f"unknown peer {raw[key]!r}"
                       + _nearest(raw[key], names), key)
    return value
