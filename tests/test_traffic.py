"""Payment schedules: determinism, Poisson rate, log-normal amounts, endpoint weights."""
from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.topology import Topo, line, scale_free, star
from emulator.traffic import (
    MIN_AMOUNT_MSAT,
    Payment,
    TrafficError,
    explicit_flows,
    poisson_schedule,
    schedule_digest,
)

TOPO = scale_free(30, seed=5)


def schedule(seed: int = 1, **overrides) -> list[Payment]:
    args = dict(rate_per_s=20.0, duration_s=30.0, amount_mean_msat=50_000, amount_sigma=1.0,
                seed=seed)
    args.update(overrides)
    return poisson_schedule(overrides.pop("topo", TOPO), **args)


def test_same_seed_same_schedule_and_digest():
    first, again = schedule(seed=9), schedule(seed=9)
    assert first == again and len(first) > 100
    assert schedule_digest(first) == schedule_digest(again)
    assert len(schedule_digest(first)) == 64


def test_different_seed_different_schedule():
    assert schedule(seed=1) != schedule(seed=2)
    assert schedule_digest(schedule(seed=1)) != schedule_digest(schedule(seed=2))


def test_digest_sees_every_field():
    base = Payment(1.5, "a", "b", 1000)
    digests = {schedule_digest([p]) for p in (
        base, Payment(1.25, "a", "b", 1000), Payment(1.5, "b", "a", 1000),
        Payment(1.5, "a", "b", 1001), Payment(1.5, "a", "b", 1000, "keysend"))}
    assert len(digests) == 5
    assert schedule_digest([]) != schedule_digest([base])


def test_amounts_do_not_move_times_or_endpoints():
    cheap, dear = schedule(amount_mean_msat=10_000), schedule(amount_mean_msat=900_000)
    assert [(p.at, p.source, p.dest) for p in cheap] == [(p.at, p.source, p.dest) for p in dear]


def test_mean_rate_matches_request():
    payments = schedule(rate_per_s=50.0, duration_s=200.0)
    assert len(payments) / 200.0 == pytest.approx(50.0, rel=0.03)     # sd ~ 1%
    gaps = [b.at - a.at for a, b in zip(payments, payments[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(1 / 50.0, rel=0.03)


def test_amounts_are_log_normal_with_the_requested_mean():
    mean_msat, sigma = 2_000_000, 0.8
    payments = schedule(rate_per_s=100.0, duration_s=100.0, amount_mean_msat=mean_msat,
                        amount_sigma=sigma)
    logs = [math.log(p.amount_msat) for p in payments]
    assert statistics.mean(logs) == pytest.approx(math.log(mean_msat) - sigma ** 2 / 2,
                                                  abs=0.03)
    assert statistics.stdev(logs) == pytest.approx(sigma, rel=0.05)
    assert statistics.mean(p.amount_msat for p in payments) == pytest.approx(mean_msat,
                                                                             rel=0.05)


def test_amounts_clamp_at_one_sat():
    payments = schedule(amount_mean_msat=MIN_AMOUNT_MSAT, amount_sigma=2.0)
    assert min(p.amount_msat for p in payments) == MIN_AMOUNT_MSAT


def test_capacity_weighting():
    capacities = {"big": 10_000_000, "p1": 1_000_000, "p2": 1_000_000, "p3": 1_000_000,
                  "p4": 1_000_000, "p5": 1_000_000}
    payments = poisson_schedule(capacities, 50.0, 100.0, 10_000, 0.5, seed=3)
    sources = Counter(p.source for p in payments)
    # expected share as source: 10/15 for "big", 1/15 each for the others
    assert sources["big"] / len(payments) == pytest.approx(10 / 15, abs=0.03)
    for small in ("p1", "p2", "p3", "p4", "p5"):
        assert sources["big"] > 5 * sources[small]
    # a destination is drawn from the others: when a small peer pays, "big" has 10/14
    dests = Counter(p.dest for p in payments if p.source != "big")
    assert dests["big"] / sum(dests.values()) == pytest.approx(10 / 14, abs=0.03)


def test_roles_shape_sources_and_dests():
    topo = star(9)      # hub lsp "a"; customers b d f h; merchants c e g i
    payments = poisson_schedule(topo, 50.0, 100.0, 10_000, 0.5, seed=4)
    roles = {p.name: p.role for p in topo.peers}
    source_roles = Counter(roles[p.source] for p in payments)
    dest_roles = Counter(roles[p.dest] for p in payments)
    assert source_roles["customer"] > 3 * source_roles["merchant"]
    assert dest_roles["merchant"] > 3 * dest_roles["customer"]
    assert source_roles["lsp"] < source_roles["customer"] / 2


def test_sources_and_dests_restrict_endpoints():
    payments = poisson_schedule(line(6), 20.0, 20.0, 10_000, 0.5, seed=1,
                                sources=["a", "b"], dests=["f"])
    assert {p.source for p in payments} == {"a", "b"} and {p.dest for p in payments} == {"f"}
    with pytest.raises(TrafficError, match="unknown sources: zz"):
        poisson_schedule(line(3), 1.0, 1.0, 10_000, 0.5, seed=1, sources=["zz"])


def test_a_lone_endpoint_cannot_pay_itself():
    with pytest.raises(TrafficError, match="other than 'a'"):
        poisson_schedule(line(3), 10.0, 10.0, 10_000, 0.5, seed=1, sources=["a"], dests=["a"])
    isolated = Topo()
    isolated.add_peer("a")
    with pytest.raises(TrafficError, match="capacity"):
        poisson_schedule(isolated, 10.0, 10.0, 10_000, 0.5, seed=1)


@pytest.mark.parametrize("overrides,message", [
    ({"rate_per_s": 0.0}, "rate_per_s"), ({"duration_s": -1.0}, "duration_s"),
    ({"amount_mean_msat": 999}, "amount_mean_msat"), ({"amount_sigma": -0.1}, "sigma"),
    ({"kind": "wire"}, "kind"),
])
def test_poisson_rejects_bad_arguments(overrides, message):
    with pytest.raises(TrafficError, match=message):
        schedule(**overrides)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), rate_per_s=st.floats(0.1, 50.0),
       duration_s=st.floats(0.0, 20.0), amount_mean_msat=st.integers(1000, 10**9),
       amount_sigma=st.floats(0.0, 3.0), n=st.integers(2, 8))
def test_schedule_properties(seed, rate_per_s, duration_s, amount_mean_msat, amount_sigma, n):
    payments = poisson_schedule(line(n), rate_per_s, duration_s, amount_mean_msat,
                                amount_sigma, seed)
    assert [p.at for p in payments] == sorted(p.at for p in payments)
    assert all(0 <= p.at < duration_s for p in payments)
    assert all(p.source != p.dest for p in payments)
    assert all(isinstance(p.amount_msat, int) and p.amount_msat > 0 for p in payments)


# --- explicit flows ---------------------------------------------------------------

def test_explicit_flows_merge_in_time_order():
    payments = explicit_flows([
        {"source": "a", "dest": "b", "amount_msat": 5000, "rate_per_s": 2, "duration_s": 2},
        {"source": "c", "dest": "a", "amount_msat": 7000, "at": 0.75, "kind": "keysend"},
        {"source": "b", "dest": "c", "amount_msat": 1000, "rate_per_s": 1, "start_s": 0.5,
         "count": 2},
    ])
    assert [(p.at, p.source) for p in payments] == [
        (0.0, "a"), (0.5, "a"), (0.5, "b"), (0.75, "c"), (1.0, "a"), (1.5, "a"), (1.5, "b")]
    assert payments[3].kind == "keysend" and payments[0].kind == "invoice"


def test_explicit_rate_runs_until_the_call_duration():
    payments = explicit_flows([{"source": "a", "dest": "b", "amount_msat": 1000,
                                "rate_per_s": 10, "start_s": 1}], duration_s=2.0)
    assert len(payments) == 10 and payments[-1].at == pytest.approx(1.9)


@pytest.mark.parametrize("flow,message", [
    ({"source": "a", "dest": "b", "amount_msat": 1000}, "exactly one"),
    ({"source": "a", "dest": "b", "amount_msat": 1000, "at": 1, "rate_per_s": 1},
     "exactly one"),
    ({"source": "a", "amount_msat": 1000, "at": 1}, "missing dest"),
    ({"source": "a", "dest": "b", "amount_msat": 1000, "at": 1, "speed": 3}, "speed"),
    ({"source": "a", "dest": "a", "amount_msat": 1000, "at": 1}, "itself"),
    ({"source": "a", "dest": "b", "amount_msat": 0, "at": 1}, "positive"),
    ({"source": "a", "dest": "b", "amount_msat": 1000, "rate_per_s": 1}, "to end"),
    ({"source": "a", "dest": "b", "amount_msat": 1000, "rate_per_s": -1, "count": 1},
     "rate_per_s"),
])
def test_explicit_flow_errors_name_the_flow(flow, message):
    with pytest.raises(TrafficError, match=message) as info:
        explicit_flows([flow])
    assert "flows[0]" in str(info.value)


def test_a_dominant_peer_is_never_its_own_destination():
    capacities = {"whale": 10**15, "x": 1, "y": 1}
    payments = poisson_schedule(capacities, 50.0, 10.0, 10_000, 0.5, seed=2)
    assert {p.source for p in payments} == {"whale"}
    assert {p.dest for p in payments} == {"x", "y"}
