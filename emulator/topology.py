"""Topologies as data: peers and channels, the builders that make them, a registry.

A :class:`Topo` only records who exists and which channels they open (Mininet's
``Topo.build()`` idea): the emulator turns it into processes. Builders are pure and
deterministic; the only random one, :func:`scale_free`, takes a seed. The
:data:`TOPOS` registry lets the CLI accept ``--topo line,5`` through
:func:`parse_topo`.

Conventions every builder follows:

- peers are named ``a``, ``b``, … ``z``, ``aa``, ``ab``, … in creation order
  (:func:`peer_name`);
- side ``a`` of a channel opens (funds) it; ``push_fraction`` of the capacity is
  pushed to side ``b`` so that payments can flow both ways (0.5 by default);
- every peer gets ``WALLET_RESERVE_SAT`` plus, for each channel it opens, the
  capacity and ``OPEN_MARGIN_SAT`` for the funding transaction's fee
  (:meth:`Topo.fund_openers`).
"""
from __future__ import annotations

import inspect
import json
import random
import re
import statistics
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator.errors import LnemuError


class TopologyError(LnemuError):
    """A topology that cannot be built: unknown peer, bad channel, bad spec or file."""

    code = "bad_topology"


ROLES = ("customer", "merchant", "router", "lsp")
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
MIN_CHANNEL_SAT = 20_000            # a floor below which a channel is mostly reserve
MAX_CHANNEL_SAT = 16_777_215        # BOLT 2: 2^24 - 1 sat unless option_support_large_channel
MAX_SUPPLY_SAT = 21_000_000 * 100_000_000
MAX_CLTV_EXPIRY_DELTA = 65_535      # BOLT 7: u16
MAX_BUILDER_PEERS = 10_000

DEFAULT_CAPACITY_SAT = 1_000_000
DEFAULT_PUSH_FRACTION = 0.5
WALLET_RESERVE_SAT = 100_000        # left on chain after all opens (on-chain payments, closes)
OPEN_MARGIN_SAT = 10_000            # per opened channel: the funding transaction's fee


@dataclass
class TopoPeer:
    """A peer to start: its name, its on-chain funds at genesis and its role."""

    name: str
    funds_sat: int = 0
    role: str = "router"


@dataclass
class TopoChannel:
    """A channel that peer ``a`` opens to peer ``b``, with the policy both announce."""

    a: str
    b: str
    capacity_sat: int
    push_msat: int = 0
    private: bool = False
    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 1
    cltv_expiry_delta: int = 40


@dataclass
class Topo:
    """Peers and the channels between them; ``name`` says how it was made."""

    peers: list[TopoPeer] = field(default_factory=list)
    channels: list[TopoChannel] = field(default_factory=list)
    name: str = ""
    _index: dict[str, TopoPeer] = field(default_factory=dict, init=False, repr=False,
                                        compare=False)

    def add_peer(self, name: str, funds_sat: int = 0, role: str = "router") -> TopoPeer:
        """Add a peer; names follow the scenario rule, roles are those in ``ROLES``."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise TopologyError(f"peer name {name!r} must be a letter then up to 31 "
                                "letters, digits, '-' or '_'")
        if self._find(name) is not None:
            raise TopologyError(f"duplicate peer name {name!r}")
        if role not in ROLES:
            raise TopologyError(f"peer {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
        if not 0 <= funds_sat <= MAX_SUPPLY_SAT:
            raise TopologyError(f"peer {name!r}: funds_sat {funds_sat} is outside "
                                f"0..{MAX_SUPPLY_SAT}")
        peer = TopoPeer(name, funds_sat, role)
        self.peers.append(peer)
        self._index[name] = peer
        return peer

    def add_channel(self, a: str, b: str, capacity_sat: int, push_msat: int = 0,
                    private: bool = False, fee_base_msat: int = 1000,
                    fee_proportional_millionths: int = 1, cltv_expiry_delta: int = 40,
                    *, wumbo: bool = False) -> TopoChannel:
        """Add a channel opened by ``a`` to ``b``; checks ends, capacity, push and fees."""
        where = f"channel {a}->{b}"
        for end in (a, b):
            if self._find(end) is None:
                raise TopologyError(f"{where}: unknown peer {end!r}")
        if a == b:
            raise TopologyError(f"{where}: a peer cannot open a channel to itself")
        max_sat = MAX_SUPPLY_SAT if wumbo else MAX_CHANNEL_SAT
        if not MIN_CHANNEL_SAT <= capacity_sat <= max_sat:
            hint = "" if wumbo else " (pass wumbo=True for larger channels)"
            raise TopologyError(f"{where}: capacity_sat {capacity_sat} is outside "
                                f"{MIN_CHANNEL_SAT}..{max_sat}{hint}")
        if not 0 <= push_msat <= capacity_sat * 1000:
            raise TopologyError(f"{where}: push_msat {push_msat} is outside "
                                f"0..{capacity_sat * 1000} (the capacity in msat)")
        if fee_base_msat < 0 or fee_proportional_millionths < 0:
            raise TopologyError(f"{where}: fees must not be negative")
        if not 0 <= cltv_expiry_delta <= MAX_CLTV_EXPIRY_DELTA:
            raise TopologyError(f"{where}: cltv_expiry_delta {cltv_expiry_delta} is outside "
                                f"0..{MAX_CLTV_EXPIRY_DELTA}")
        channel = TopoChannel(a, b, capacity_sat, push_msat, private, fee_base_msat,
                              fee_proportional_millionths, cltv_expiry_delta)
        self.channels.append(channel)
        return channel

    def peer(self, name: str) -> TopoPeer:
        """The peer called ``name``; raises TopologyError if there is none."""
        found = self._find(name)
        if found is None:
            raise TopologyError(f"unknown peer {name!r}")
        return found

    def names(self) -> list[str]:
        """Peer names in creation order."""
        return [p.name for p in self.peers]

    def neighbours(self, name: str) -> list[str]:
        """Distinct peers sharing a channel with ``name``, in channel order."""
        self.peer(name)
        found: dict[str, None] = {}
        for ch in self.channels:
            if ch.a == name:
                found[ch.b] = None
            elif ch.b == name:
                found[ch.a] = None
        return list(found)

    def degree(self, name: str) -> int:
        """Number of channels ``name`` is an end of (parallel channels count apiece)."""
        self.peer(name)
        return sum(1 for ch in self.channels if name in (ch.a, ch.b))

    def capacity_sat(self, name: str) -> int:
        """Total capacity of the channels ``name`` is an end of."""
        self.peer(name)
        return sum(ch.capacity_sat for ch in self.channels if name in (ch.a, ch.b))

    def is_connected(self) -> bool:
        """True when every peer can reach every other over channels (vacuous if < 2)."""
        if len(self.peers) < 2:
            return True
        adjacency: dict[str, set[str]] = {p.name: set() for p in self.peers}
        for ch in self.channels:
            adjacency[ch.a].add(ch.b)
            adjacency[ch.b].add(ch.a)
        seen = {self.peers[0].name}
        todo = [self.peers[0].name]
        while todo:
            for other in adjacency[todo.pop()] - seen:
                seen.add(other)
                todo.append(other)
        return len(seen) == len(self.peers)

    def fund_openers(self, reserve_sat: int = WALLET_RESERVE_SAT,
                     margin_sat: int = OPEN_MARGIN_SAT) -> None:
        """Give each peer at least the reserve plus capacity and margin per channel it opens."""
        needed = {p.name: reserve_sat for p in self.peers}
        for ch in self.channels:
            needed[ch.a] += ch.capacity_sat + margin_sat
        for p in self.peers:
            p.funds_sat = max(p.funds_sat, needed[p.name])

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"peers": [...], "channels": [...]}`` with the scenario's keys."""
        return {"peers": [asdict(p) for p in self.peers],
                "channels": [asdict(ch) for ch in self.channels]}

    def to_toml(self) -> str:
        """A scenario file fragment: one ``[[peers]]`` and one ``[[channels]]`` per record."""
        lines = [f"# topology {self.name}"] if self.name else []
        data = self.to_dict()
        for table in ("peers", "channels"):
            for record in data[table]:
                lines += ["", f"[[{table}]]"]
                lines += [f"{key} = {_toml_value(value)}" for key, value in record.items()]
        return "\n".join(lines).lstrip("\n") + "\n"

    def _find(self, name: str) -> TopoPeer | None:
        if len(self._index) != len(self.peers):      # peers appended from outside
            self._index = {p.name: p for p in self.peers}
        return self._index.get(name)


def _toml_value(value: Any) -> str:
    """A TOML literal for a bool, an int (with ``_`` every three digits) or a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}"
    return json.dumps(str(value))   # JSON string escapes are valid TOML basic strings


def peer_name(index: int) -> str:
    """Builder names: 0 -> ``a``, 25 -> ``z``, 26 -> ``aa``, 27 -> ``ab`` …"""
    if index < 0:
        raise TopologyError(f"peer index {index} is negative")
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


# --- builders ---------------------------------------------------------------------

def _check_count(value: int, minimum: int, what: str) -> None:
    if not isinstance(value, int) or not minimum <= value <= MAX_BUILDER_PEERS:
        raise TopologyError(f"{what} must be an integer in {minimum}..{MAX_BUILDER_PEERS},"
                            f" not {value!r}")


def _push_msat(capacity_sat: int, push_fraction: float) -> int:
    if not 0.0 <= push_fraction <= 1.0:
        raise TopologyError(f"push_fraction {push_fraction} is outside 0..1")
    return int(capacity_sat * 1000 * push_fraction)


def _new(name: str, count: int, roles: Callable[[int], str] = lambda i: "router") -> Topo:
    topo = Topo(name=name)
    for i in range(count):
        topo.add_peer(peer_name(i), role=roles(i))
    return topo


def _link(topo: Topo, i: int, j: int, capacity_sat: int, push_fraction: float) -> None:
    topo.add_channel(peer_name(i), peer_name(j), capacity_sat,
                     _push_msat(capacity_sat, push_fraction))


def _endpoint_role(i: int) -> str:
    """Alternate customers and merchants so that every payer has somewhere to pay."""
    return "customer" if i % 2 == 0 else "merchant"


def line(n: int, *, capacity_sat: int = DEFAULT_CAPACITY_SAT,
         push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """``n`` peers in a chain a-b-c-…; the first is a customer, the last a merchant."""
    _check_count(n, 2, "line: n")
    roles = {0: "customer", n - 1: "merchant"}
    topo = _new(f"line,{n}", n, lambda i: roles.get(i, "router"))
    for i in range(n - 1):
        _link(topo, i, i + 1, capacity_sat, push_fraction)
    topo.fund_openers()
    return topo


def ring(n: int, *, capacity_sat: int = DEFAULT_CAPACITY_SAT,
         push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """``n`` routers in a cycle; every peer has degree 2."""
    _check_count(n, 3, "ring: n")
    topo = _new(f"ring,{n}", n)
    for i in range(n):
        _link(topo, i, (i + 1) % n, capacity_sat, push_fraction)
    topo.fund_openers()
    return topo


def star(n: int, *, capacity_sat: int = DEFAULT_CAPACITY_SAT,
         push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """An LSP hub (peer 0) that opens a channel to each of ``n - 1`` customers and merchants."""
    _check_count(n, 2, "star: n")
    topo = _new(f"star,{n}", n, lambda i: "lsp" if i == 0 else _endpoint_role(i - 1))
    for i in range(1, n):
        _link(topo, 0, i, capacity_sat, push_fraction)
    topo.fund_openers()
    return topo


def grid(rows: int, cols: int, *, capacity_sat: int = DEFAULT_CAPACITY_SAT,
         push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """A ``rows`` × ``cols`` lattice of routers, row-major; each opens right and down."""
    _check_count(rows, 1, "grid: rows")
    _check_count(cols, 1, "grid: cols")
    _check_count(rows * cols, 2, "grid: rows * cols")
    topo = _new(f"grid,{rows},{cols}", rows * cols)
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            if c + 1 < cols:
                _link(topo, here, here + 1, capacity_sat, push_fraction)
            if r + 1 < rows:
                _link(topo, here, here + cols, capacity_sat, push_fraction)
    topo.fund_openers()
    return topo


def complete(n: int, *, capacity_sat: int = DEFAULT_CAPACITY_SAT,
             push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """Every pair of ``n`` routers shares one channel, opened by the earlier peer."""
    _check_count(n, 2, "complete: n")
    topo = _new(f"complete,{n}", n)
    for i in range(n):
        for j in range(i + 1, n):
            _link(topo, i, j, capacity_sat, push_fraction)
    topo.fund_openers()
    return topo


def scale_free(n: int, m: int = 2, *, seed: int = 1,
               capacity_sat: int = DEFAULT_CAPACITY_SAT,
               push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """Barabási–Albert: each newcomer opens ``m`` channels to peers chosen by degree.

    Starts from a complete core of ``m + 1`` peers; the same seed gives the same graph.
    Peers above the median degree route, the rest alternate customer and merchant.
    """
    _check_count(m, 1, "scalefree: m")
    _check_count(n, m + 1, "scalefree: n")
    rng = random.Random(seed)
    edges = [(i, j) for i in range(m + 1) for j in range(i + 1, m + 1)]
    # each peer appears once per channel end: a uniform pick is a pick by degree
    ends = [end for edge in edges for end in edge]
    for newcomer in range(m + 1, n):
        targets: set[int] = set()
        while len(targets) < m:
            targets.add(rng.choice(ends))
        for target in sorted(targets):
            edges.append((newcomer, target))
            ends += [newcomer, target]
    topo = _new(f"scalefree,{n},{m}", n)
    for i, j in edges:
        _link(topo, i, j, capacity_sat, push_fraction)
    _roles_by_degree(topo)
    topo.fund_openers()
    return topo


def _roles_by_degree(topo: Topo) -> None:
    """Well-connected peers (degree above the median) route; the periphery pays and sells."""
    if not topo.peers:
        return
    degrees = {p.name: 0 for p in topo.peers}
    for ch in topo.channels:
        degrees[ch.a] += 1
        degrees[ch.b] += 1
    median = statistics.median(degrees.values())
    periphery = 0
    for p in topo.peers:
        if degrees[p.name] > median:
            p.role = "router"
        else:
            p.role = _endpoint_role(periphery)
            periphery += 1


# --- LND import -------------------------------------------------------------------

def from_lnd_describegraph(path_or_dict: str | Path | Mapping[str, Any],
                           capacity_scale: float = 1.0, max_nodes: int | None = None, *,
                           push_fraction: float = DEFAULT_PUSH_FRACTION) -> Topo:
    """Import ``lncli describegraph`` JSON: its nodes, channels, capacities and fees.

    Capacities are multiplied by ``capacity_scale`` and clamped to
    ``MIN_CHANNEL_SAT..MAX_CHANNEL_SAT``. With ``max_nodes``, the nodes with the most
    total capacity are kept, and only the channels between them. A channel takes
    node1's policy, else node2's, else the defaults. Names come from aliases (or
    ``n`` + a pubkey prefix) made safe and unique.
    """
    graph = _load_graph(path_or_dict)
    if capacity_scale <= 0:
        raise TopologyError(f"capacity_scale must be positive, not {capacity_scale}")
    pubkeys = _node_pubkeys(graph)
    aliases = {pk: alias for pk, alias in pubkeys}
    edges = _lnd_edges(graph["edges"])
    for edge in edges:
        for pk in (edge["node1_pub"], edge["node2_pub"]):
            aliases.setdefault(pk, "")     # a channel end with no node announcement
    kept = _keep_nodes(list(aliases), edges, max_nodes)
    names = _safe_names([(pk, aliases[pk]) for pk in aliases if pk in kept])
    topo = Topo(name=f"lnd:{len(names)}")
    for name in names.values():
        topo.add_peer(name)
    for edge in edges:
        if edge["node1_pub"] in names and edge["node2_pub"] in names:
            _add_lnd_channel(topo, names, edge, capacity_scale, push_fraction)
    _roles_by_degree(topo)
    topo.fund_openers()
    return topo


def _load_graph(path_or_dict: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(path_or_dict, Mapping):
        graph = path_or_dict
    else:
        try:
            graph = json.loads(Path(path_or_dict).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TopologyError(f"cannot read describegraph JSON {path_or_dict}: {exc}") from exc
    if not isinstance(graph, Mapping):
        raise TopologyError("describegraph JSON must be an object with nodes and edges")
    for key in ("nodes", "edges"):
        if not isinstance(graph.get(key, []), list):
            raise TopologyError(f"describegraph JSON: {key!r} must be a list")
    return {"nodes": graph.get("nodes", []), "edges": graph.get("edges", [])}


def _node_pubkeys(graph: Mapping[str, Any]) -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for i, node in enumerate(graph["nodes"]):
        pk = node.get("pub_key") if isinstance(node, Mapping) else None
        if not isinstance(pk, str) or not pk:
            raise TopologyError(f"describegraph nodes[{i}]: no pub_key")
        found.setdefault(pk, str(node.get("alias") or ""))
    return list(found.items())


def _lnd_edges(raw: list[Any]) -> list[dict[str, Any]]:
    edges = []
    for i, edge in enumerate(raw):
        where = f"describegraph edges[{i}]"
        if not isinstance(edge, Mapping):
            raise TopologyError(f"{where}: not an object")
        ends = edge.get("node1_pub"), edge.get("node2_pub")
        if not all(isinstance(pk, str) and pk for pk in ends):
            raise TopologyError(f"{where}: node1_pub and node2_pub are required")
        if ends[0] == ends[1]:
            continue
        capacity = _lnd_int(edge.get("capacity"), f"{where}.capacity")
        if capacity is None:
            raise TopologyError(f"{where}: no capacity")
        edges.append({"node1_pub": ends[0], "node2_pub": ends[1], "capacity": capacity,
                      "policy": _lnd_policy(edge, where)})
    return edges


def _lnd_int(value: Any, where: str) -> int | None:
    """LND writes 64-bit numbers as strings: accept ``"123"`` and ``123``; None if absent."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"{where}: {value!r} is not an integer") from exc


def _lnd_policy(edge: Mapping[str, Any], where: str) -> dict[str, int]:
    """node1's routing policy, else node2's, else ours; missing fields take defaults."""
    policy = edge.get("node1_policy") or edge.get("node2_policy") or {}
    if not isinstance(policy, Mapping):
        raise TopologyError(f"{where}: a policy must be an object")
    fields = {"fee_base_msat": ("fee_base_msat", 1000),
              "fee_proportional_millionths": ("fee_rate_milli_msat", 1),
              "cltv_expiry_delta": ("time_lock_delta", 40)}
    result = {}
    for ours, (theirs, default) in fields.items():
        value = _lnd_int(policy.get(theirs), f"{where}.{theirs}")
        result[ours] = max(0, default if value is None else value)
    result["cltv_expiry_delta"] = min(result["cltv_expiry_delta"], MAX_CLTV_EXPIRY_DELTA)
    return result


def _keep_nodes(pubkeys: list[str], edges: list[dict[str, Any]],
                max_nodes: int | None) -> set[str]:
    if max_nodes is None:
        return set(pubkeys)
    if max_nodes < 2:
        raise TopologyError(f"max_nodes must be at least 2, not {max_nodes}")
    total = dict.fromkeys(pubkeys, 0)
    for edge in edges:
        total[edge["node1_pub"]] += edge["capacity"]
        total[edge["node2_pub"]] += edge["capacity"]
    ranked = sorted(pubkeys, key=lambda pk: (-total[pk], pk))
    return set(ranked[:max_nodes])


def _safe_names(nodes: list[tuple[str, str]]) -> dict[str, str]:
    """Map pubkey -> a unique peer name from its alias (or ``n`` + pubkey prefix)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for pk, alias in nodes:
        base = _alias_name(alias, pk)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        names[pk] = name
    return names


def _alias_name(alias: str, pubkey: str) -> str:
    ascii_alias = unicodedata.normalize("NFKD", alias).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9_-]+", "_", ascii_alias.lower()).strip("_-")[:16].strip("_-")
    # LND's default alias is the pubkey's first bytes in hex: say so more briefly
    if not name or (len(name) >= 8 and pubkey.lower().startswith(name)):
        return "n" + re.sub(r"[^a-z0-9]", "", pubkey.lower())[:8]
    return name if name[0].isalpha() else "n" + name[:15]


def _add_lnd_channel(topo: Topo, names: Mapping[str, str], edge: Mapping[str, Any],
                     capacity_scale: float, push_fraction: float) -> None:
    scaled = round(edge["capacity"] * capacity_scale)
    capacity_sat = min(max(scaled, MIN_CHANNEL_SAT), MAX_CHANNEL_SAT)
    topo.add_channel(names[edge["node1_pub"]], names[edge["node2_pub"]], capacity_sat,
                     _push_msat(capacity_sat, push_fraction), **edge["policy"])


# --- registry ---------------------------------------------------------------------

TOPOS: dict[str, Callable[..., Topo]] = {
    "line": line,
    "ring": ring,
    "star": star,
    "grid": grid,
    "complete": complete,
    "scalefree": scale_free,
}


def topo_usage(name: str) -> str:
    """The spec form of a registered builder, from its positional parameters."""
    parts = [name]
    for param in inspect.signature(TOPOS[name]).parameters.values():
        if param.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        arg = param.name.upper()
        parts.append(arg if param.default is inspect.Parameter.empty else f"[{arg}]")
    return ",".join(parts).replace(",[", "[,")


def parse_topo(spec: str, seed: int = 1) -> Topo:
    """Build the topology ``spec`` names, e.g. ``line,5``, ``grid,3,4``, ``scalefree,50,3``."""
    forms = "; valid forms: " + " | ".join(topo_usage(name) for name in TOPOS)
    name, *raw_args = [part.strip() for part in str(spec).split(",")]
    builder = TOPOS.get(name.lower())
    if builder is None:
        raise TopologyError(f"unknown topology {name!r} in {spec!r}{forms}")
    try:
        args = [int(arg) for arg in raw_args]
    except ValueError:
        raise TopologyError(f"topology {spec!r}: arguments must be integers{forms}") from None
    kwargs = {"seed": seed} if "seed" in inspect.signature(builder).parameters else {}
    try:
        inspect.signature(builder).bind(*args, **kwargs)
    except TypeError:
        raise TopologyError(f"topology {spec!r}: wrong number of arguments{forms}") from None
    return builder(*args, **kwargs)
