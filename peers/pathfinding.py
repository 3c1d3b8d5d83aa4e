"""Pathfinding: the cheapest likely route for a payment, and splitting it into parts.

Pure logic, no I/O. :func:`find_route` runs Dijkstra from the payee back to us, so each
step knows exactly what must arrive at the next node and can add the fee and CLTV delta
of the node that forwards to it. A path's cost is its fees, plus a CLTV risk
(``amount * delta * risk_factor`` for every forwarding hop), plus ``attempt_cost_msat``
divided by its success probability (the product of :class:`MissionControl` estimates).
When nothing fits, :class:`NoRouteError` says why, with a :class:`NoRouteReason`.
"""
from __future__ import annotations

import heapq
import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from emulator.errors import BadRequest, LnemuError
from peers.graph import Edge
from peers.mission_control import MissionControl

__all__ = ["Edge", "MissionControl", "NoRouteError", "NoRouteReason", "Route", "RouteHop",
           "build_route", "find_route", "split_payment"]


@dataclass(frozen=True)
class RouteHop:
    """One hop of a route: the node reached, the channel to it, the HTLC arriving there."""

    node_id: bytes
    short_channel_id: int
    amount_msat: int   # what the HTLC arriving at node_id carries
    cltv_expiry: int   # that HTLC's expiry


class Route(list[RouteHop]):
    """A route: first hop is our direct peer, last is the payee."""

    @property
    def total_amount_msat(self) -> int:
        """What we send on the first channel (the payment plus every fee)."""
        return self[0].amount_msat

    @property
    def fee_msat(self) -> int:
        """The fees of every forwarding node."""
        return self[0].amount_msat - self[-1].amount_msat

    @property
    def total_cltv(self) -> int:
        """The expiry of the HTLC we offer on the first channel."""
        return self[0].cltv_expiry


class NoRouteReason(StrEnum):
    """Why no route was found, from the most to the least fundamental."""

    UNKNOWN_TARGET = "unknown_target"  # the payee has no channel at all
    NO_CHANNELS = "no_channels"        # we have no channel at all
    NO_PATH = "no_path"                # the graph does not connect us to the payee
    EXCLUDED = "excluded"              # every path uses an excluded channel or node
    DISABLED = "disabled"              # every path uses a disabled channel
    TOO_MANY_HOPS = "too_many_hops"    # every usable path is longer than max_hops
    LOCAL_BALANCE = "local_balance"    # our own channels cannot spend the amount
    CAPACITY = "capacity"              # no path is wide enough for the amount
    LIMITS = "limits"                  # fees, htlc_minimum/maximum rule out every path
    SPLIT = "split"                    # split_payment could not place every part


# Amount-dependent reasons: a smaller part might still find a route.
SPLITTABLE_REASONS = frozenset({NoRouteReason.LOCAL_BALANCE, NoRouteReason.CAPACITY,
                                NoRouteReason.LIMITS})


class NoRouteError(LnemuError):
    """No route for the payment; ``reason`` is a :class:`NoRouteReason`."""

    code = "no_route"

    def __init__(self, reason: NoRouteReason, message: str) -> None:
        super().__init__(f"no route: {message}")
        self.reason = reason


def build_route(path: Sequence[Edge], amount_msat: int, *, current_height: int,
                final_cltv_delta: int, cltv_buffer: int = 0) -> Route:
    """The hops (amounts and expiries) for delivering ``amount_msat`` along ``path``."""
    hops: list[RouteHop] = []
    hop_amount_msat = amount_msat
    expiry = current_height + final_cltv_delta + cltv_buffer
    for index in range(len(path) - 1, -1, -1):
        edge = path[index]
        hops.append(RouteHop(edge.dest, edge.short_channel_id, hop_amount_msat, expiry))
        if index > 0:  # edge.source forwards over edge, per its own channel_update
            hop_amount_msat += edge.fee_msat(hop_amount_msat)
            expiry += edge.cltv_expiry_delta
    return Route(reversed(hops))


@dataclass(frozen=True)
class _Search:
    """One pathfinding request: the find_route arguments, checked."""

    source: bytes
    target: bytes
    amount_msat: int
    current_height: int
    final_cltv_delta: int
    cltv_buffer: int = 0
    mission: MissionControl = field(default_factory=MissionControl)
    local_outbound_msat: Mapping[int, int] | None = None
    max_hops: int = 20
    exclude_channels: Collection[int] = frozenset()
    exclude_nodes: Collection[bytes] = frozenset()
    now: float = 0.0
    risk_factor: float = 15e-9
    attempt_cost_msat: int = 100_000

    def __post_init__(self) -> None:
        if self.source == self.target:
            raise BadRequest("cannot route a payment to ourselves")
        if type(self.amount_msat) is not int or self.amount_msat <= 0:
            raise BadRequest(f"amount_msat must be a positive int, got {self.amount_msat!r}")
        if self.max_hops < 1:
            raise BadRequest(f"max_hops must be at least 1, got {self.max_hops!r}")

    def allowed(self, edge: Edge) -> bool:
        """True unless the edge's channel or either end is excluded."""
        return (edge.short_channel_id not in self.exclude_channels
                and edge.source not in self.exclude_nodes
                and edge.dest not in self.exclude_nodes)

    def usable(self, edge: Edge) -> bool:
        """Allowed and enabled (amounts aside)."""
        return not edge.disabled and self.allowed(edge)

    def spendable_msat(self, edge: Edge) -> int | None:
        """Our balance on our own edge, if balances were given; None otherwise."""
        if edge.source != self.source or self.local_outbound_msat is None:
            return None
        return self.local_outbound_msat.get(edge.short_channel_id, 0)

    def carries(self, edge: Edge, amount_msat: int) -> bool:
        """True if the edge can carry an HTLC of ``amount_msat`` (limits and our balance)."""
        spendable_msat = self.spendable_msat(edge)
        return edge.can_carry(amount_msat) and (spendable_msat is None
                                                or amount_msat <= spendable_msat)


# --- Dijkstra from the payee back to us ---------------------------------------------------

@dataclass(frozen=True)
class _Label:
    """The best way found so far from a node to the payee."""

    cost: float
    amount_msat: int       # what must arrive at this node
    cltv_delta: int        # its expiry minus the final expiry
    probability: float     # that every edge to the payee carries its amount
    risk_msat: float       # the CLTV risk summed over the forwarding hops
    hops: int              # edges from this node to the payee
    edge: Edge | None      # the first of them


def _relax(edge: Edge, label: _Label, search: _Search) -> _Label | None:
    """The label of edge.source when it reaches the payee over ``edge``, or None."""
    carried_msat = label.amount_msat
    if not search.carries(edge, carried_msat):
        return None
    amount_msat, cltv_delta, risk_msat = carried_msat, label.cltv_delta, label.risk_msat
    if edge.source == search.source:  # our own channel: no fee, no delta of ours
        known = search.local_outbound_msat is not None
        probability = 1.0 if known else search.mission.probability(edge, carried_msat,
                                                                   search.now)
    else:
        amount_msat += edge.fee_msat(carried_msat)
        cltv_delta += edge.cltv_expiry_delta
        risk_msat += carried_msat * edge.cltv_expiry_delta * search.risk_factor
        probability = search.mission.probability(edge, carried_msat, search.now)
    probability *= label.probability
    fee_msat = amount_msat - search.amount_msat
    cost = fee_msat + risk_msat + search.attempt_cost_msat / probability
    return _Label(cost, amount_msat, cltv_delta, probability, risk_msat, label.hops + 1, edge)


def _incoming(edges: Sequence[Edge], keep: Callable[[Edge], bool]) -> dict[bytes, list[Edge]]:
    by_dest: dict[bytes, list[Edge]] = defaultdict(list)
    for edge in edges:
        if keep(edge):
            by_dest[edge.dest].append(edge)
    return by_dest


def _dijkstra(edges: Sequence[Edge], search: _Search) -> tuple[list[Edge] | None, bool]:
    """The cheapest path (edges from us to the payee) or None; and whether max_hops cut any."""
    incoming = _incoming(edges, search.usable)
    best = {search.target: _Label(0.0, search.amount_msat, 0, 1.0, 0.0, 0, None)}
    heap: list[tuple[float, int, bytes]] = [(0.0, 0, search.target)]
    order = itertools.count(1)
    settled: set[bytes] = set()
    hops_cut = False
    while heap:
        _, _, node = heapq.heappop(heap)
        if node in settled:
            continue
        settled.add(node)
        if node == search.source:
            return _path_from(best, search.source, search.target), hops_cut
        for edge in incoming.get(node, ()):
            if edge.source in settled:
                continue
            label = _relax(edge, best[node], search)
            if label is None:
                continue
            # A node other than us still needs at least our edge to it.
            if label.hops + (edge.source != search.source) > search.max_hops:
                hops_cut = True
                continue
            held = best.get(edge.source)
            if held is None or label.cost < held.cost:
                best[edge.source] = label
                heapq.heappush(heap, (label.cost, next(order), edge.source))
    return None, hops_cut


def _path_from(best: Mapping[bytes, _Label], source: bytes, target: bytes) -> list[Edge]:
    path, node = [], source
    while node != target:
        edge = best[node].edge
        assert edge is not None
        path.append(edge)
        node = edge.dest
    return path


def _find_path(edges: Sequence[Edge], search: _Search) -> list[Edge]:
    path, hops_cut = _dijkstra(edges, search)
    if path is None:
        raise _diagnose(edges, search, hops_cut)
    return path


def find_route(
    edges: Sequence[Edge], source: bytes, target: bytes, amount_msat: int, *,
    current_height: int, final_cltv_delta: int, cltv_buffer: int = 0,
    mission: MissionControl | None = None,
    local_outbound_msat: Mapping[int, int] | None = None, max_hops: int = 20,
    exclude_channels: Collection[int] = frozenset(),
    exclude_nodes: Collection[bytes] = frozenset(), now: float = 0.0,
    risk_factor: float = 15e-9, attempt_cost_msat: int = 100_000,
) -> Route:
    """The cheapest likely route delivering ``amount_msat`` to ``target``; NoRouteError if none.

    ``local_outbound_msat`` maps our channels' short_channel_ids to what we can spend
    on them; when given, an own channel missing from it is unusable.
    """
    search = _Search(source, target, amount_msat, current_height, final_cltv_delta,
                     cltv_buffer, mission or MissionControl(), local_outbound_msat, max_hops,
                     exclude_channels, exclude_nodes, now, risk_factor, attempt_cost_msat)
    return _route_for(_find_path(edges, search), search)


def _route_for(path: Sequence[Edge], search: _Search) -> Route:
    return build_route(path, search.amount_msat, current_height=search.current_height,
                       final_cltv_delta=search.final_cltv_delta, cltv_buffer=search.cltv_buffer)


# --- explaining a failure -----------------------------------------------------------------

def _hop_distances(edges: Sequence[Edge], target: bytes,
                   keep: Callable[[Edge], bool]) -> dict[bytes, int]:
    """Fewest edges from each node to ``target`` over the kept edges (amounts ignored)."""
    incoming = _incoming(edges, keep)
    distances, queue = {target: 0}, deque([target])
    while queue:
        node = queue.popleft()
        for edge in incoming.get(node, ()):
            if edge.source not in distances:
                distances[edge.source] = distances[node] + 1
                queue.append(edge.source)
    return distances


def _widest_path_msat(edges: Sequence[Edge], search: _Search) -> int:
    """The largest HTLC one path could carry, fees ignored (max over paths of min width)."""
    outgoing: dict[bytes, list[Edge]] = defaultdict(list)
    for edge in edges:
        if search.usable(edge):
            outgoing[edge.source].append(edge)
    unbounded_msat = 2**64
    width = {search.source: unbounded_msat}
    heap = [(-unbounded_msat, search.source)]
    while heap:
        negative_width, node = heapq.heappop(heap)
        if node == search.target:
            return -negative_width
        if -negative_width < width[node]:
            continue  # stale entry
        for edge in outgoing.get(node, ()):
            spendable_msat = search.spendable_msat(edge)
            edge_msat = min(edge.capacity_msat, edge.htlc_maximum_msat,
                            unbounded_msat if spendable_msat is None else spendable_msat)
            through_msat = min(-negative_width, edge_msat)
            if edge.dest != search.source and through_msat > width.get(edge.dest, -1):
                width[edge.dest] = through_msat
                heapq.heappush(heap, (-through_msat, edge.dest))
    return 0


def _local_spendable_msat(edges: Sequence[Edge], search: _Search,
                          distances: Mapping[bytes, int]) -> int | None:
    """Our largest balance on a channel that leads to the payee within max_hops."""
    if search.local_outbound_msat is None:
        return None
    balances = [search.spendable_msat(edge) or 0 for edge in edges
                if edge.source == search.source and search.usable(edge)
                and distances.get(edge.dest, search.max_hops) < search.max_hops]
    return max(balances, default=0)


def _diagnose(edges: Sequence[Edge], search: _Search, hops_cut: bool) -> NoRouteError:
    """The most fundamental reason why Dijkstra found nothing."""
    payee, amount_msat = search.target.hex()[:16], search.amount_msat
    if not any(edge.dest == search.target for edge in edges):
        return NoRouteError(NoRouteReason.UNKNOWN_TARGET, f"no channel at all to {payee}")
    if not any(edge.source == search.source for edge in edges):
        return NoRouteError(NoRouteReason.NO_CHANNELS, "we have no channel at all")
    if search.source not in _hop_distances(edges, search.target, lambda edge: True):
        return NoRouteError(NoRouteReason.NO_PATH, f"no path at all from us to {payee}")
    if search.source not in _hop_distances(edges, search.target, search.allowed):
        return NoRouteError(NoRouteReason.EXCLUDED,
                            f"every path to {payee} uses an excluded channel or node")
    distances = _hop_distances(edges, search.target, search.usable)
    if search.source not in distances:
        return NoRouteError(NoRouteReason.DISABLED,
                            f"every path to {payee} uses a disabled channel")
    if distances[search.source] > search.max_hops:
        return NoRouteError(NoRouteReason.TOO_MANY_HOPS,
                            f"too many hops: the shortest path to {payee} has "
                            f"{distances[search.source]} hops, max_hops is {search.max_hops}")
    spendable_msat = _local_spendable_msat(edges, search, distances)
    if spendable_msat is not None and spendable_msat < amount_msat:
        return NoRouteError(NoRouteReason.LOCAL_BALANCE,
                            f"not enough local balance: we can spend at most {spendable_msat} "
                            f"msat on a channel toward {payee}, need {amount_msat} msat")
    widest_msat = _widest_path_msat(edges, search)
    if widest_msat < amount_msat:
        return NoRouteError(NoRouteReason.CAPACITY,
                            f"not enough liquidity: no path to {payee} can carry {amount_msat} "
                            f"msat, the widest carries at most {widest_msat} msat")
    if hops_cut:
        return NoRouteError(NoRouteReason.TOO_MANY_HOPS,
                            f"too many hops: every path able to carry {amount_msat} msat to "
                            f"{payee} is longer than max_hops {search.max_hops}")
    return NoRouteError(NoRouteReason.LIMITS,
                        f"no path to {payee} can carry {amount_msat} msat once fees and "
                        "htlc_minimum/htlc_maximum limits apply")


# --- multi-part payments ------------------------------------------------------------------

def _edge_key(edge: Edge) -> tuple[int, bytes]:
    return edge.short_channel_id, edge.source


class _PartPlanner:
    """Places the parts of a payment one by one, reserving what each uses per channel."""

    def __init__(self, edges: Sequence[Edge], search: _Search, parts_max: int,
                 min_part_msat: int) -> None:
        self.edges, self.search = list(edges), search
        self.parts_max, self.min_part_msat = parts_max, min_part_msat
        self.reserved_msat: dict[tuple[int, bytes], int] = defaultdict(int)

    def _remaining_search(self, amount_msat: int) -> _Search:
        local = self.search.local_outbound_msat
        if local is not None:
            local = {scid: balance_msat - self.reserved_msat[(scid, self.search.source)]
                     for scid, balance_msat in local.items()}
        return replace(self.search, amount_msat=amount_msat, local_outbound_msat=local)

    def _remaining_edges(self) -> list[Edge]:
        return [replace(edge, capacity_msat=edge.capacity_msat - self.reserved_msat[key])
                if (key := _edge_key(edge)) in self.reserved_msat else edge
                for edge in self.edges]

    def _fits(self, path: Sequence[Edge], search: _Search) -> bool:
        route = _route_for(path, search)
        return all(search.carries(edge, hop.amount_msat)
                   for edge, hop in zip(path, route, strict=True))

    def _widen(self, path: Sequence[Edge], search: _Search, remaining_msat: int) -> int:
        """The largest part (>= search.amount_msat) this path carries, leaving no tiny rest."""
        low_msat, high_msat = search.amount_msat, remaining_msat
        while low_msat < high_msat:  # fits() is monotonic above an amount that fits
            middle_msat = (low_msat + high_msat + 1) // 2
            if self._fits(path, replace(search, amount_msat=middle_msat)):
                low_msat = middle_msat
            else:
                high_msat = middle_msat - 1
        if 0 < remaining_msat - low_msat < self.min_part_msat:
            low_msat = remaining_msat - self.min_part_msat
        return low_msat

    def _first_part(self, remaining_msat: int, attempt_msat: int) -> int:
        attempt_msat = min(attempt_msat, remaining_msat)
        if 0 < remaining_msat - attempt_msat < self.min_part_msat:
            attempt_msat = remaining_msat - self.min_part_msat
        return attempt_msat

    def _place(self, path: Sequence[Edge], search: _Search) -> Route:
        route = _route_for(path, search)
        for edge, hop in zip(path, route, strict=True):
            self.reserved_msat[_edge_key(edge)] += hop.amount_msat
        return route

    def plan(self, first_attempt_msat: int) -> list[Route]:
        """Routes whose final amounts sum to the payment; NoRouteError if impossible."""
        routes: list[Route] = []
        remaining_msat, attempt_msat = self.search.amount_msat, first_attempt_msat
        while remaining_msat > 0:
            attempt_msat = self._first_part(remaining_msat, attempt_msat)
            if len(routes) >= self.parts_max or attempt_msat < self.min_part_msat:
                raise self._failure(remaining_msat, None)
            search = self._remaining_search(attempt_msat)
            try:
                path = _find_path(self._remaining_edges(), search)
            except NoRouteError as exc:
                if exc.reason not in SPLITTABLE_REASONS or attempt_msat == self.min_part_msat:
                    raise self._failure(remaining_msat, exc) from exc
                attempt_msat = max(attempt_msat // 2, self.min_part_msat)
                continue
            part_msat = self._widen(path, search, remaining_msat)
            routes.append(self._place(path, replace(search, amount_msat=part_msat)))
            remaining_msat -= part_msat
            attempt_msat = remaining_msat
        return routes

    def _failure(self, remaining_msat: int, cause: NoRouteError | None) -> NoRouteError:
        total_msat = self.search.amount_msat
        why = f" ({cause.args[0].removeprefix('no route: ')})" if cause is not None else ""
        return NoRouteError(NoRouteReason.SPLIT,
                            f"could not split {total_msat} msat into at most {self.parts_max} "
                            f"parts of at least {self.min_part_msat} msat: {remaining_msat} "
                            f"msat found no route{why}")


def split_payment(edges: Sequence[Edge], source: bytes, target: bytes, amount_msat: int, *,
                  parts_max: int = 16, min_part_msat: int = 10_000,
                  **find_route_kwargs: Any) -> list[Route]:
    """One route, or several whose final amounts sum exactly to ``amount_msat`` (MPP)."""
    if parts_max < 1 or min_part_msat < 1:
        raise BadRequest("parts_max and min_part_msat must be positive")
    try:
        return [find_route(edges, source, target, amount_msat, **find_route_kwargs)]
    except NoRouteError as exc:
        if exc.reason not in SPLITTABLE_REASONS or amount_msat < 2 * min_part_msat:
            raise
    if find_route_kwargs.get("mission") is None:
        find_route_kwargs["mission"] = MissionControl()
    search = _Search(source, target, amount_msat, **find_route_kwargs)
    planner = _PartPlanner(edges, search, parts_max, min_part_msat)
    return planner.plan(first_attempt_msat=amount_msat // 2)
