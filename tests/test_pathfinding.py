"""Pathfinding: exact fees and expiries, constraints, mission control, MPP, failure reasons."""
from __future__ import annotations

from collections import defaultdict

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import BadRequest, DecodeError
from peers.graph import Edge
from peers.mission_control import MissionControl
from peers.pathfinding import (
    NoRouteError,
    NoRouteReason,
    Route,
    RouteHop,
    build_route,
    find_route,
    split_payment,
)

HEIGHT = 800_000
FINAL_CLTV = 18
BIG_MSAT = 10_000_000_000


def node(name: str | int) -> bytes:
    """A fake 33-byte node id."""
    tag = name.encode() if isinstance(name, str) else name.to_bytes(2, "big")
    return b"\x02" + tag.rjust(32, b"\x00")


A, B, C, D, E = (node(name) for name in "ABCDE")


def edge(scid: int, source: bytes, dest: bytes, *, capacity_msat: int = BIG_MSAT,
         base_msat: int = 1000, ppm: int = 1, delta: int = 40, htlc_min_msat: int = 0,
         htlc_max_msat: int | None = None, disabled: bool = False) -> Edge:
    """One direction of a channel, with test-friendly defaults."""
    return Edge(scid, source, dest, capacity_msat, base_msat, ppm, delta, htlc_min_msat,
                capacity_msat if htlc_max_msat is None else htlc_max_msat, disabled)


def both(scid: int, node_a: bytes, node_b: bytes, **policy) -> list[Edge]:
    """Both directions of a channel with the same policy."""
    return [edge(scid, node_a, node_b, **policy), edge(scid, node_b, node_a, **policy)]


def route(edges, source, target, amount_msat, **kwargs) -> Route:
    kwargs.setdefault("current_height", HEIGHT)
    kwargs.setdefault("final_cltv_delta", FINAL_CLTV)
    return find_route(edges, source, target, amount_msat, **kwargs)


def split(edges, source, target, amount_msat, **kwargs) -> list[Route]:
    kwargs.setdefault("current_height", HEIGHT)
    kwargs.setdefault("final_cltv_delta", FINAL_CLTV)
    return split_payment(edges, source, target, amount_msat, **kwargs)


def no_route(edges, source, target, amount_msat, **kwargs) -> NoRouteError:
    with pytest.raises(NoRouteError) as info:
        route(edges, source, target, amount_msat, **kwargs)
    return info.value


def scids(found: list[RouteHop]) -> list[int]:
    return [hop.short_channel_id for hop in found]


# --- exact amounts and expiries -------------------------------------------------------

def line_abcde() -> list[Edge]:
    """A–B–C–D–E; the reverse directions charge absurd fees to catch direction mix-ups."""
    forward = [
        edge(1, A, B, base_msat=7777, ppm=7777, delta=99),  # ours: no fee, no delta
        edge(2, B, C, base_msat=1000, ppm=100, delta=40),
        edge(3, C, D, base_msat=2000, ppm=333, delta=30),
        edge(4, D, E, base_msat=500, ppm=1000, delta=18),
    ]
    backward = [edge(e.short_channel_id, e.dest, e.source, base_msat=99_999, ppm=99_999,
                     delta=999) for e in forward]
    return forward + backward


def test_line_amounts_and_expiries_match_hand_computation():
    found = route(line_abcde(), A, E, 1_000_000)
    # E gets 1_000_000 at HEIGHT + 18.
    # D forwards over 4: 500 + 1_000_000 * 1000 // 1e6 = 1_500       -> 1_001_500, +18
    # C forwards over 3: 2000 + 1_001_500 * 333 // 1e6 = 2000 + 333  -> 1_003_833, +30
    # B forwards over 2: 1000 + 1_003_833 * 100 // 1e6 = 1000 + 100  -> 1_004_933, +40
    assert found == [
        RouteHop(B, 1, 1_004_933, HEIGHT + 18 + 18 + 30 + 40),
        RouteHop(C, 2, 1_003_833, HEIGHT + 18 + 18 + 30),
        RouteHop(D, 3, 1_001_500, HEIGHT + 18 + 18),
        RouteHop(E, 4, 1_000_000, HEIGHT + 18),
    ]
    assert found.total_amount_msat == 1_004_933
    assert found.fee_msat == 4_933
    assert found.total_cltv == HEIGHT + 106


def test_cltv_buffer_is_added_to_the_final_expiry_only_once():
    plain = route(line_abcde(), A, E, 1_000_000)
    padded = route(line_abcde(), A, E, 1_000_000, cltv_buffer=3)
    assert [hop.cltv_expiry - 3 for hop in padded] == [hop.cltv_expiry for hop in plain]


def test_direct_peer_pays_no_fee():
    found = route(line_abcde(), A, B, 5_000)
    assert found == [RouteHop(B, 1, 5_000, HEIGHT + FINAL_CLTV)]
    assert found.fee_msat == 0


def test_build_route_agrees_with_find_route():
    edges = line_abcde()
    assert build_route(edges[:4], 1_000_000, current_height=HEIGHT,
                       final_cltv_delta=FINAL_CLTV) == route(edges, A, E, 1_000_000)


# --- choosing among paths ----------------------------------------------------------------

def diamond(**b_to_d) -> list[Edge]:
    """A–B–D (cheap) and A–C–D (dearer); ``b_to_d`` overrides the B→D policy."""
    policy_b_to_d = {"base_msat": 1000, "ppm": 10} | b_to_d
    return [
        *both(1, A, B), *both(2, A, C),
        edge(3, B, D, **policy_b_to_d), edge(3, D, B),
        *both(4, C, D, base_msat=5000, ppm=500),
    ]


def test_cheaper_path_is_preferred():
    assert scids(route(diamond(), A, D, 1_000_000)) == [1, 3]


def test_path_lacking_capacity_is_avoided():
    assert scids(route(diamond(capacity_msat=999_999), A, D, 1_000_000)) == [2, 4]


def test_disabled_edge_is_avoided():
    assert scids(route(diamond(disabled=True), A, D, 1_000_000)) == [2, 4]


def test_htlc_maximum_is_respected():
    assert scids(route(diamond(htlc_max_msat=999_999), A, D, 1_000_000)) == [2, 4]
    assert scids(route(diamond(htlc_max_msat=1_000_000), A, D, 1_000_000)) == [1, 3]


def test_htlc_minimum_is_respected():
    assert scids(route(diamond(htlc_min_msat=1_000_001), A, D, 1_000_000)) == [2, 4]


def test_own_local_balance_is_respected():
    edges = diamond()
    found = route(edges, A, D, 1_000_000, local_outbound_msat={1: 900_000, 2: 2_000_000})
    assert scids(found) == [2, 4]
    # An own channel missing from the balances is unusable.
    assert scids(route(edges, A, D, 1_000_000, local_outbound_msat={2: 2_000_000})) == [2, 4]
    error = no_route(edges, A, D, 1_000_000, local_outbound_msat={1: 900_000, 2: 5})
    assert error.reason == NoRouteReason.LOCAL_BALANCE
    assert "900000 msat" in str(error)


def test_excluded_channels_and_nodes_are_avoided():
    assert scids(route(diamond(), A, D, 1_000_000, exclude_channels={3})) == [2, 4]
    assert scids(route(diamond(), A, D, 1_000_000, exclude_nodes={B})) == [2, 4]
    error = no_route(diamond(), A, D, 1_000_000, exclude_nodes={B, C})
    assert error.reason == NoRouteReason.EXCLUDED


# --- mission control -------------------------------------------------------------------

def test_failed_channel_steers_away_then_memory_decays():
    edges, mission = diamond(), MissionControl(half_life_s=10.0)
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=100.0)) == [1, 3]
    mission.record_failure(3, B, D, 1_000_000, now=100.0)
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=100.0)) == [2, 4]
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=110.0)) == [2, 4]
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=400.0)) == [1, 3]


def test_failed_node_steers_away_then_memory_decays():
    edges, mission = diamond(), MissionControl(half_life_s=10.0)
    mission.record_node_failure(B, now=0.0)
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=1.0)) == [2, 4]
    assert scids(route(edges, A, D, 1_000_000, mission=mission, now=300.0)) == [1, 3]


def test_probability_apriori_failure_success_and_decay():
    mission = MissionControl(half_life_s=100.0)
    channel = edge(7, A, B, capacity_msat=1_000_000)
    apriori = mission.probability(channel, 400_000, now=0.0)
    assert apriori == pytest.approx(1 - 400_000 / 1_000_001)
    mission.record_failure(7, A, B, 500_000, now=0.0)
    assert mission.probability(channel, 500_000, now=0.0) == mission.min_probability
    assert mission.probability(channel, 400_000, now=0.0) == pytest.approx(0.2, abs=1e-5)
    one_half_life = mission.probability(channel, 400_000, now=100.0)
    assert 0.2 < one_half_life < apriori
    assert mission.probability(channel, 400_000, now=5_000.0) == pytest.approx(apriori)
    mission.record_success(7, A, B, 300_000, now=5_000.0)
    assert mission.probability(channel, 300_000, now=5_000.0) == 1.0
    assert mission.probability(channel, 200_000, now=5_000.0) == 1.0
    assert mission.probability(channel, 400_000, now=5_000.0) > apriori
    # Other directions and channels are untouched.
    assert mission.probability(edge(7, B, A, capacity_msat=1_000_000), 400_000, 0.0) == apriori


def test_contradicting_observations_replace_each_other():
    mission = MissionControl(half_life_s=100.0)
    channel = edge(7, A, B, capacity_msat=1_000_000)
    mission.record_success(7, A, B, 600_000, now=0.0)
    mission.record_failure(7, A, B, 500_000, now=1.0)
    assert mission.pairs[(7, A, B)].success is None
    assert mission.probability(channel, 500_000, now=1.0) == mission.min_probability
    mission.record_failure(7, A, B, 900_000, now=2.0)  # a fresh tighter bound is kept
    assert mission.pairs[(7, A, B)].failure.amount_msat == 500_000
    mission.record_success(7, A, B, 700_000, now=3.0)
    assert mission.pairs[(7, A, B)].failure is None


def test_mission_control_wire_round_trip_and_prune():
    mission = MissionControl(half_life_s=60.0, min_probability=0.01)
    mission.record_failure(7, A, B, 500_000, now=1.0)
    mission.record_success(7, A, B, 100_000, now=2.0)
    mission.record_success(8, B, C, 42, now=3.0)
    mission.record_node_failure(D, now=4.0)
    wire = msgpack.unpackb(msgpack.packb(mission.to_wire()), raw=False)
    again = MissionControl.from_wire(wire)
    assert again.to_wire() == mission.to_wire()
    channel = edge(7, A, B, capacity_msat=1_000_000)
    assert again.probability(channel, 300_000, 50.0) == mission.probability(channel, 300_000,
                                                                            50.0)
    with pytest.raises(DecodeError):
        MissionControl.from_wire({"half_life_s": 1.0, "min_probability": 0.1,
                                  "pairs": [[7, "A", B, None, None, None, None]],
                                  "node_failures": []})
    again.prune(now=1.5 + 20 * 60.0)  # only the failure at 1.0 is older than 20 half-lives
    assert again.pairs[(7, A, B)].failure is None
    assert again.pairs[(7, A, B)].success is not None
    again.prune(now=5.0 + 20 * 60.0)
    assert again.pairs == {} and again.node_failures == {}


# --- limits and reasons ----------------------------------------------------------------

def long_line(count: int) -> tuple[list[bytes], list[Edge]]:
    nodes = [node(index) for index in range(count)]
    edges = [e for index in range(count - 1) for e in both(index + 1, nodes[index],
                                                            nodes[index + 1])]
    return nodes, edges


def test_max_hops_is_enforced():
    nodes, edges = long_line(25)
    error = no_route(edges, nodes[0], nodes[-1], 1_000)
    assert error.reason == NoRouteReason.TOO_MANY_HOPS
    assert "too many hops" in str(error) and "24 hops" in str(error)
    assert len(route(edges, nodes[0], nodes[-1], 1_000, max_hops=24)) == 24
    assert len(route(edges, nodes[0], nodes[20], 1_000)) == 20


def test_max_hops_cuts_the_only_wide_path():
    narrow = [*both(1, A, B), *both(2, B, E, capacity_msat=1_000)]
    wide = [*both(3, A, C), *both(4, C, D), *both(5, D, E)]
    assert len(route(narrow + wide, A, E, 50_000)) == 3
    error = no_route(narrow + wide, A, E, 50_000, max_hops=2)
    assert error.reason == NoRouteReason.TOO_MANY_HOPS


def test_reasons_tell_no_path_from_no_liquidity():
    edges = [*both(1, A, B), *both(2, B, C, capacity_msat=800_000), *both(3, D, E)]
    error = no_route(edges, A, E, 1_000)
    assert error.reason == NoRouteReason.NO_PATH and "no path at all" in str(error)
    error = no_route(edges, A, C, 1_000_000)
    assert error.reason == NoRouteReason.CAPACITY
    assert "not enough liquidity" in str(error) and "800000 msat" in str(error)
    assert no_route(edges, A, node("Z"), 1_000).reason == NoRouteReason.UNKNOWN_TARGET
    assert no_route(edges, D, A, 1_000).reason == NoRouteReason.NO_PATH
    assert no_route(edges[2:], A, C, 1_000).reason == NoRouteReason.NO_CHANNELS


def test_reasons_for_disabled_and_limits():
    edges = [*both(1, A, B), edge(2, B, C, disabled=True), edge(2, C, B)]
    assert no_route(edges, A, C, 1_000).reason == NoRouteReason.DISABLED
    edges = [*both(1, A, B), edge(2, B, C, htlc_min_msat=5_000), edge(2, C, B)]
    error = no_route(edges, A, C, 1_000)
    assert error.reason == NoRouteReason.LIMITS and error.code == "no_route"


def test_bad_requests_are_typed():
    with pytest.raises(BadRequest):
        route(diamond(), A, A, 1_000)
    with pytest.raises(BadRequest):
        route(diamond(), A, D, 0)


# --- multi-part payments ---------------------------------------------------------------

def parallel_paths(*widths_msat: int) -> list[Edge]:
    """A → X_i → E for each width (our channels are wide, the second hops are not)."""
    edges = []
    for index, width_msat in enumerate(widths_msat):
        middle = node(100 + index)
        edges += both(10 * index + 1, A, middle)
        edges += both(10 * index + 2, middle, E, capacity_msat=width_msat)
    return edges


def reserved_per_direction(routes: list[Route], source: bytes) -> dict[tuple, int]:
    reserved: dict[tuple, int] = defaultdict(int)
    for found in routes:
        previous = source
        for hop in found:
            reserved[(hop.short_channel_id, previous)] += hop.amount_msat
            previous = hop.node_id
    return reserved


def test_mpp_splits_exactly_without_oversubscribing():
    edges = parallel_paths(70_000_000, 30_000_000, 25_000_000)
    routes = split(edges, A, E, 100_000_000)
    assert len(routes) >= 2
    assert sum(found[-1].amount_msat for found in routes) == 100_000_000
    capacity = {(e.short_channel_id, e.source): e.capacity_msat for e in edges}
    for key, amount_msat in reserved_per_direction(routes, A).items():
        assert amount_msat <= capacity[key]
    for found in routes:
        assert_valid_route(found, edges, A, E, found[-1].amount_msat, None, 20)


def test_mpp_respects_local_balances_and_single_route_when_possible():
    edges = parallel_paths(70_000_000, 70_000_000)
    balances = {1: 40_000_000, 11: 40_000_000}
    routes = split(edges, A, E, 60_000_000, local_outbound_msat=balances)
    assert sum(found[-1].amount_msat for found in routes) == 60_000_000
    for key, amount_msat in reserved_per_direction(routes, A).items():
        if key[1] == A:
            assert amount_msat <= balances[key[0]]
    assert len(split(edges, A, E, 1_000_000)) == 1


def test_mpp_fails_when_the_amount_does_not_fit():
    edges = parallel_paths(30_000_000, 30_000_000)
    with pytest.raises(NoRouteError) as info:
        split(edges, A, E, 61_000_000)
    assert info.value.reason == NoRouteReason.SPLIT
    with pytest.raises(NoRouteError) as info:
        split(edges, A, E, 50_000_000, parts_max=1)
    assert info.value.reason == NoRouteReason.SPLIT
    with pytest.raises(NoRouteError) as info:  # structural reasons are not split over
        split(edges, A, node("Z"), 50_000_000)
    assert info.value.reason == NoRouteReason.UNKNOWN_TARGET


# --- properties on random graphs -------------------------------------------------------

def assert_valid_route(found, edges, source, target, amount_msat, local, max_hops,
                       current_height=HEIGHT, final_cltv_delta=FINAL_CLTV):
    """Consecutive existing edges, exact fees and deltas, all within limits."""
    by_key = {(e.short_channel_id, e.source, e.dest): e for e in edges}
    assert 1 <= len(found) <= max_hops
    assert found[-1].node_id == target and found[-1].amount_msat == amount_msat
    assert found[-1].cltv_expiry == current_height + final_cltv_delta
    visited, previous = {source}, source
    for index, hop in enumerate(found):
        used = by_key[(hop.short_channel_id, previous, hop.node_id)]
        assert hop.node_id not in visited
        assert not used.disabled
        assert used.htlc_minimum_msat <= hop.amount_msat <= used.htlc_maximum_msat
        assert hop.amount_msat <= used.capacity_msat
        if index == 0 and local is not None:
            assert hop.amount_msat <= local[hop.short_channel_id]
        if index > 0:
            fee_msat = (used.fee_base_msat
                        + hop.amount_msat * used.fee_proportional_millionths // 1_000_000)
            assert found[index - 1].amount_msat == hop.amount_msat + fee_msat
            assert found[index - 1].cltv_expiry == hop.cltv_expiry + used.cltv_expiry_delta
        visited.add(hop.node_id)
        previous = hop.node_id


@st.composite
def random_graphs(draw):
    """A small connected graph with random policies; node 0 is us."""
    count = draw(st.integers(2, 6))
    nodes = [node(index) for index in range(count)]
    pairs = [(draw(st.integers(0, index - 1)), index) for index in range(1, count)]
    pairs += draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))
                           .filter(lambda pair: pair[0] != pair[1]), max_size=6))
    edges = []
    for scid, (index_a, index_b) in enumerate(pairs, start=1):
        capacity_msat = draw(st.integers(10, 500)) * 10_000
        for source, dest in ((nodes[index_a], nodes[index_b]), (nodes[index_b], nodes[index_a])):
            edges.append(Edge(
                scid, source, dest, capacity_msat, draw(st.integers(0, 2_000)),
                draw(st.integers(0, 50_000)), draw(st.integers(0, 144)),
                draw(st.integers(0, 3_000)), capacity_msat - draw(st.integers(0, capacity_msat - 1_000)),
                draw(st.integers(0, 9)) == 9,  # rarely disabled
            ))
    local = None
    if draw(st.booleans()):
        local = {e.short_channel_id: e.capacity_msat - draw(st.integers(0, e.capacity_msat))
                 for e in edges if e.source == nodes[0]}
    return nodes, edges, local


def simple_paths(edges, source, target, max_hops):
    """Every simple path (list of edges) from source to target of at most max_hops edges."""
    outgoing = defaultdict(list)
    for e in edges:
        outgoing[e.source].append(e)
    stack = [(source, [], {source})]
    while stack:
        at, path, seen = stack.pop()
        if at == target:
            yield path
            continue
        if len(path) < max_hops:
            for e in outgoing[at]:
                if e.dest not in seen:
                    stack.append((e.dest, path + [e], seen | {e.dest}))


def path_is_feasible(path, amount_msat, local) -> bool:
    found = build_route(path, amount_msat, current_height=HEIGHT, final_cltv_delta=FINAL_CLTV)
    for index, (used, hop) in enumerate(zip(path, found, strict=True)):
        if not used.can_carry(hop.amount_msat):
            return False
        if index == 0 and local is not None and hop.amount_msat > local.get(
                used.short_channel_id, 0):
            return False
    return True


# These reasons are proofs that no path exists; the others are heuristic.
SOUND_REASONS = {NoRouteReason.UNKNOWN_TARGET, NoRouteReason.NO_CHANNELS, NoRouteReason.NO_PATH,
                 NoRouteReason.DISABLED, NoRouteReason.CAPACITY, NoRouteReason.LOCAL_BALANCE}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.data())
def test_any_route_found_on_random_graphs_is_valid(graph, data):
    nodes, edges, local = graph
    target = data.draw(st.sampled_from(nodes[1:]))
    amount_msat = data.draw(st.integers(1, 3_000_000))
    max_hops = data.draw(st.integers(1, 5))
    try:
        found = route(edges, nodes[0], target, amount_msat, local_outbound_msat=local,
                      max_hops=max_hops)
    except NoRouteError as error:
        if error.reason in SOUND_REASONS:
            assert not any(path_is_feasible(path, amount_msat, local)
                           for path in simple_paths(edges, nodes[0], target, max_hops))
        return
    assert_valid_route(found, edges, nodes[0], target, amount_msat, local, max_hops)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.data())
def test_split_parts_are_valid_exact_and_not_oversubscribed(graph, data):
    nodes, edges, local = graph
    target = data.draw(st.sampled_from(nodes[1:]))
    into_target_msat = sum(e.capacity_msat for e in edges if e.dest == target)
    amount_msat = max(20_000, into_target_msat * data.draw(st.integers(1, 12)) // 10)
    try:
        routes = split(edges, nodes[0], target, amount_msat, local_outbound_msat=local,
                       min_part_msat=10_000)
    except NoRouteError:
        return
    assert sum(found[-1].amount_msat for found in routes) == amount_msat
    for found in routes:
        assert_valid_route(found, edges, nodes[0], target, found[-1].amount_msat, local, 20)
    capacity = {(e.short_channel_id, e.source): e.capacity_msat for e in edges}
    for (scid, source), reserved_msat in reserved_per_direction(routes, nodes[0]).items():
        assert reserved_msat <= capacity[(scid, source)]
        if source == nodes[0] and local is not None:
            assert reserved_msat <= local[scid]
