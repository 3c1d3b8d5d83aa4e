"""Topologies: builder shapes, the registry and spec parser, TOML output, LND import."""
from __future__ import annotations

import json
import re
import statistics
import tomllib

import pytest

from emulator.errors import LnemuError
from emulator.topology import (
    MAX_CHANNEL_SAT,
    MIN_CHANNEL_SAT,
    OPEN_MARGIN_SAT,
    ROLES,
    TOPOS,
    WALLET_RESERVE_SAT,
    Topo,
    TopologyError,
    complete,
    from_lnd_describegraph,
    grid,
    line,
    parse_topo,
    peer_name,
    ring,
    scale_free,
    star,
)

NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def degrees(topo: Topo) -> list[int]:
    return [topo.degree(p.name) for p in topo.peers]


def assert_well_formed(topo: Topo) -> None:
    """Names follow the scenario rule, roles are known, every opener can afford its opens."""
    assert len(set(topo.names())) == len(topo.peers)
    for peer in topo.peers:
        assert NAME_RULE.fullmatch(peer.name), peer.name
        assert peer.role in ROLES
        opened = [ch for ch in topo.channels if ch.a == peer.name]
        assert peer.funds_sat >= sum(ch.capacity_sat + OPEN_MARGIN_SAT for ch in opened)
        assert peer.funds_sat >= WALLET_RESERVE_SAT
    for ch in topo.channels:
        assert MIN_CHANNEL_SAT <= ch.capacity_sat <= MAX_CHANNEL_SAT
        assert 0 <= ch.push_msat <= ch.capacity_sat * 1000
    assert topo.is_connected()


# --- Topo itself ------------------------------------------------------------------

def test_peer_names_are_spreadsheet_letters():
    assert [peer_name(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == \
        ["a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa"]


def test_add_channel_checks_ends_capacity_and_push():
    topo = Topo()
    topo.add_peer("alice", 2_000_000, "customer")
    topo.add_peer("bob")
    with pytest.raises(TopologyError, match="unknown peer 'carol'"):
        topo.add_channel("alice", "carol", 100_000)
    with pytest.raises(TopologyError, match="itself"):
        topo.add_channel("alice", "alice", 100_000)
    with pytest.raises(TopologyError, match="capacity_sat 19999"):
        topo.add_channel("alice", "bob", MIN_CHANNEL_SAT - 1)
    with pytest.raises(TopologyError, match="wumbo"):
        topo.add_channel("alice", "bob", MAX_CHANNEL_SAT + 1)
    with pytest.raises(TopologyError, match="push_msat"):
        topo.add_channel("alice", "bob", 100_000, push_msat=100_000_001)
    big = topo.add_channel("alice", "bob", MAX_CHANNEL_SAT + 1, wumbo=True)
    edge = topo.add_channel("alice", "bob", MIN_CHANNEL_SAT, push_msat=MIN_CHANNEL_SAT * 1000)
    assert big.capacity_sat == MAX_CHANNEL_SAT + 1 and edge.push_msat == 20_000_000
    assert topo.degree("alice") == 2 and topo.neighbours("alice") == ["bob"]


def test_add_peer_checks_name_role_and_duplicates():
    topo = Topo()
    topo.add_peer("a")
    for bad in ("1a", "", "a" * 33, "has space"):
        with pytest.raises(TopologyError, match="letter"):
            topo.add_peer(bad)
    with pytest.raises(TopologyError, match="duplicate"):
        topo.add_peer("a")
    with pytest.raises(TopologyError, match="role"):
        topo.add_peer("b", role="miner")
    with pytest.raises(TopologyError, match="unknown peer"):
        topo.neighbours("zz")
    assert issubclass(TopologyError, LnemuError) and TopologyError.code == "bad_topology"


def test_disconnected_topology_is_detected():
    topo = Topo()
    for name in "abcd":
        topo.add_peer(name)
    topo.add_channel("a", "b", 100_000)
    topo.add_channel("c", "d", 100_000)
    assert not topo.is_connected()
    topo.add_channel("b", "c", 100_000)
    assert topo.is_connected()


# --- builders ---------------------------------------------------------------------

def test_line():
    topo = line(5)
    assert_well_formed(topo)
    assert (len(topo.peers), len(topo.channels)) == (5, 4)
    assert degrees(topo) == [1, 2, 2, 2, 1]
    assert topo.neighbours("c") == ["b", "d"]
    assert topo.peer("a").role == "customer" and topo.peer("e").role == "merchant"
    assert topo.peer("e").funds_sat == WALLET_RESERVE_SAT     # opens nothing


def test_ring():
    topo = ring(8)
    assert_well_formed(topo)
    assert (len(topo.peers), len(topo.channels)) == (8, 8)
    assert set(degrees(topo)) == {2}
    assert sorted(topo.neighbours("a")) == ["b", "h"]


def test_star_hub_is_an_lsp_with_every_leaf():
    topo = star(6)
    assert_well_formed(topo)
    assert (len(topo.peers), len(topo.channels)) == (6, 5)
    assert topo.peer("a").role == "lsp" and topo.degree("a") == 5
    assert degrees(topo)[1:] == [1] * 5
    assert {p.role for p in topo.peers[1:]} == {"customer", "merchant"}
    assert topo.peer("a").funds_sat >= 5 * 1_000_000


def test_grid_neighbours():
    topo = grid(3, 4)
    assert_well_formed(topo)
    assert len(topo.peers) == 12
    assert len(topo.channels) == 3 * 3 + 2 * 4          # rows*(cols-1) + (rows-1)*cols
    # row-major: a b c d / e f g h / i j k l
    assert sorted(topo.neighbours("a")) == ["b", "e"]           # corner
    assert sorted(topo.neighbours("b")) == ["a", "c", "f"]      # edge
    assert sorted(topo.neighbours("f")) == ["b", "e", "g", "j"]  # interior
    assert sorted(degrees(topo)) == [2] * 4 + [3] * 6 + [4] * 2


def test_complete():
    topo = complete(4)
    assert_well_formed(topo)
    assert (len(topo.peers), len(topo.channels)) == (4, 6)
    assert set(degrees(topo)) == {3}


def test_scale_free_shape_and_determinism():
    topo = scale_free(50, 3, seed=7)
    assert_well_formed(topo)
    assert len(topo.peers) == 50
    assert len(topo.channels) == 6 + 3 * (50 - 4)      # core K4, then m per newcomer
    assert min(degrees(topo)) >= 3
    assert scale_free(50, 3, seed=7).to_dict() == topo.to_dict()
    assert scale_free(50, 3, seed=8).to_dict() != topo.to_dict()


def test_scale_free_has_hubs():
    topo = scale_free(200, seed=1)
    assert_well_formed(topo)
    found = degrees(topo)
    assert max(found) >= 5 * statistics.median(found)
    roles = {p.role for p in topo.peers}
    assert roles == {"router", "customer", "merchant"}
    hub = max(topo.peers, key=lambda p: topo.degree(p.name))
    assert hub.role == "router"


@pytest.mark.parametrize("build", [lambda: line(1), lambda: ring(2), lambda: star(1),
                                   lambda: grid(1, 1), lambda: complete(1),
                                   lambda: scale_free(3, 3), lambda: line(4, push_fraction=2)])
def test_builders_reject_degenerate_sizes(build):
    with pytest.raises(TopologyError):
        build()


def test_builder_capacity_and_push_options():
    topo = line(3, capacity_sat=200_000, push_fraction=0.0)
    assert {ch.capacity_sat for ch in topo.channels} == {200_000}
    assert {ch.push_msat for ch in topo.channels} == {0}
    assert topo.peer("a").funds_sat == WALLET_RESERVE_SAT + 200_000 + OPEN_MARGIN_SAT


# --- registry and spec parsing ----------------------------------------------------

@pytest.mark.parametrize("spec,peers,channels", [
    ("line,5", 5, 4), ("ring,8", 8, 8), ("star,6", 6, 5), ("grid,3,4", 12, 17),
    ("complete,4", 4, 6), ("scalefree,50", 50, 1 + 2 * 48), ("scalefree,50,3", 50, 144),
    (" Line , 3 ", 3, 2),
])
def test_parse_topo_good_specs(spec, peers, channels):
    topo = parse_topo(spec)
    assert (len(topo.peers), len(topo.channels)) == (peers, channels)


def test_parse_topo_passes_the_seed():
    assert parse_topo("scalefree,40", seed=3).to_dict() == scale_free(40, seed=3).to_dict()
    assert parse_topo("scalefree,40", seed=3).to_dict() != parse_topo("scalefree,40").to_dict()


@pytest.mark.parametrize("spec", ["", "torus,3", "line", "line,x", "line,5,6", "grid,3",
                                  "scalefree,50,2,1", "line,5,"])
def test_parse_topo_bad_specs_list_valid_forms(spec):
    with pytest.raises(TopologyError) as info:
        parse_topo(spec)
    for form in ("line,N", "grid,ROWS,COLS", "scalefree,N[,M]"):
        assert form in str(info.value)


def test_parse_topo_bad_size_names_the_argument():
    with pytest.raises(TopologyError, match="ring: n"):
        parse_topo("ring,2")


def test_registry_names():
    assert set(TOPOS) == {"line", "ring", "star", "grid", "complete", "scalefree"}


# --- output -----------------------------------------------------------------------

def test_to_toml_round_trips_through_tomllib():
    topo = star(4)
    topo.channels[0].private = True
    parsed = tomllib.loads(topo.to_toml())
    assert set(parsed) == {"peers", "channels"}
    assert parsed == topo.to_dict()
    assert set(parsed["channels"][0]) == {
        "a", "b", "capacity_sat", "push_msat", "private", "fee_base_msat",
        "fee_proportional_millionths", "cltv_expiry_delta"}
    assert set(parsed["peers"][0]) == {"name", "funds_sat", "role"}
    assert parsed["channels"][0]["private"] is True


# --- LND describegraph import -----------------------------------------------------

PK = {k: k * 66 for k in "0123"}       # fake pubkeys: 000…, 111…, 222…, 333…


def lnd_graph() -> dict:
    """A small describegraph dump: odd aliases, a missing policy, an unannounced node."""
    return {
        "nodes": [
            {"pub_key": PK["0"], "alias": "ACINQ", "addresses": [], "color": "#3399ff"},
            {"pub_key": PK["1"], "alias": "⚡ Zap Node ⚡", "last_update": 1},
            {"pub_key": PK["2"], "alias": PK["2"][:20]},         # LND's default alias
        ],
        "edges": [
            {"channel_id": "1", "chan_point": "aa:0", "node1_pub": PK["0"],
             "node2_pub": PK["1"], "capacity": "5000000",
             "node1_policy": {"time_lock_delta": 144, "min_htlc": "1000",
                              "fee_base_msat": "500", "fee_rate_milli_msat": "250",
                              "disabled": False, "max_htlc_msat": "4950000000"},
             "node2_policy": None},
            {"channel_id": "2", "node1_pub": PK["1"], "node2_pub": PK["2"],
             "capacity": "100000", "node1_policy": None, "node2_policy": None},
            {"channel_id": "3", "node1_pub": PK["2"], "node2_pub": PK["3"],
             "capacity": 50_000_000,
             "node2_policy": {"time_lock_delta": 80, "fee_base_msat": "0",
                              "fee_rate_milli_msat": "10"}},
        ],
    }


def test_lnd_import_names_fees_and_missing_policies():
    topo = from_lnd_describegraph(lnd_graph())
    assert topo.names() == ["acinq", "zap_node", "n22222222", "n33333333"]
    assert_well_formed(topo)
    first, second, third = topo.channels
    assert (first.a, first.b, first.capacity_sat) == ("acinq", "zap_node", 5_000_000)
    assert (first.fee_base_msat, first.fee_proportional_millionths,
            first.cltv_expiry_delta) == (500, 250, 144)
    assert (second.fee_base_msat, second.fee_proportional_millionths,
            second.cltv_expiry_delta) == (1000, 1, 40)                  # no policy at all
    assert (third.fee_base_msat, third.fee_proportional_millionths,
            third.cltv_expiry_delta) == (0, 10, 80)                     # node2's policy
    assert third.capacity_sat == MAX_CHANNEL_SAT                         # clamped


def test_lnd_import_scales_and_clamps_capacity(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(lnd_graph()))
    topo = from_lnd_describegraph(path, capacity_scale=0.1)
    assert [ch.capacity_sat for ch in topo.channels] == [500_000, MIN_CHANNEL_SAT, 5_000_000]
    assert from_lnd_describegraph(str(path)).to_dict() == from_lnd_describegraph(
        lnd_graph()).to_dict()


def test_lnd_import_max_nodes_keeps_the_biggest():
    topo = from_lnd_describegraph(lnd_graph(), max_nodes=2)
    assert topo.names() == ["n22222222", "n33333333"]     # the 50M channel's ends
    assert len(topo.channels) == 1


def test_lnd_import_makes_duplicate_aliases_unique():
    graph = {"nodes": [{"pub_key": PK[k], "alias": "same"} for k in "012"],
             "edges": [{"node1_pub": PK["0"], "node2_pub": PK["1"], "capacity": "100000"},
                       {"node1_pub": PK["1"], "node2_pub": PK["2"], "capacity": "100000"}]}
    assert from_lnd_describegraph(graph).names() == ["same", "same-2", "same-3"]


@pytest.mark.parametrize("graph,message", [
    ({"nodes": {}, "edges": []}, "must be a list"),
    ({"nodes": [{"alias": "x"}], "edges": []}, "pub_key"),
    ({"nodes": [], "edges": [{"node1_pub": "a"}]}, "node2_pub"),
    ({"nodes": [], "edges": [{"node1_pub": "a", "node2_pub": "b"}]}, "no capacity"),
    ({"nodes": [], "edges": [{"node1_pub": "a", "node2_pub": "b", "capacity": "lots"}]},
     "not an integer"),
])
def test_lnd_import_bad_files(graph, message):
    with pytest.raises(TopologyError, match=message):
        from_lnd_describegraph(graph)


def test_lnd_import_unreadable_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(TopologyError, match="cannot read"):
        from_lnd_describegraph(path)
