"""Payment schedules (SimLN-style): who pays whom, how much, and when.

Schedules are pure data computed before a run starts, so a seed fixes them and
:func:`schedule_digest` proves it in the report. Two kinds:

- :func:`poisson_schedule`: random activity. Arrivals are a Poisson process
  (exponential gaps at ``rate_per_s``); amounts are log-normal with arithmetic mean
  ``amount_mean_msat`` (as SimLN does: ``mu = ln(mean) - sigma**2 / 2``); endpoints
  are drawn with probability proportional to ``capacity * role weight``.
- :func:`explicit_flows`: fixed flows, one payment at a time or at a steady rate.

Role weights (:data:`SOURCE_ROLE_WEIGHT`, :data:`DEST_ROLE_WEIGHT`) multiply a peer's
total channel capacity:

=========  ======  ====
role       source  dest
=========  ======  ====
customer   1.0     0.2
merchant   0.2     1.0
router     0.25    0.25
lsp        0.1     0.1
=========  ======  ====

So customers mostly pay, merchants mostly get paid, and routing nodes and LSPs are
endpoints now and then. In a topology of one role, only capacity matters.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emulator.errors import LnemuError
from emulator.topology import Topo


class TrafficError(LnemuError):
    """A payment schedule that cannot be made: bad rate, amount, endpoint or flow."""

    code = "bad_traffic"


PAYMENT_KINDS = ("invoice", "keysend", "message")
MIN_AMOUNT_MSAT = 1000
SOURCE_ROLE_WEIGHT = {"customer": 1.0, "merchant": 0.2, "router": 0.25, "lsp": 0.1}
DEST_ROLE_WEIGHT = {"customer": 0.2, "merchant": 1.0, "router": 0.25, "lsp": 0.1}
FLOW_KEYS = {"source", "dest", "amount_msat", "rate_per_s", "at", "start_s", "duration_s",
             "count", "kind"}


@dataclass(frozen=True)
class Payment:
    """One payment to make ``at`` seconds after the run starts."""

    at: float
    source: str
    dest: str
    amount_msat: int
    kind: str = "invoice"

    def __post_init__(self) -> None:
        if not (isinstance(self.at, int | float) and math.isfinite(self.at) and self.at >= 0):
            raise TrafficError(f"payment time {self.at!r} must be a finite number >= 0")
        if self.source == self.dest:
            raise TrafficError(f"payment from {self.source!r} to itself")
        if not isinstance(self.amount_msat, int) or self.amount_msat <= 0:
            raise TrafficError(f"amount_msat {self.amount_msat!r} must be a positive integer")
        if self.kind not in PAYMENT_KINDS:
            raise TrafficError(f"payment kind {self.kind!r} is not one of "
                               f"{', '.join(PAYMENT_KINDS)}")


class _WeightedPicker:
    """Draws names with probability proportional to their weights, optionally excluding one."""

    def __init__(self, weights: Mapping[str, float], what: str) -> None:
        self.names = [name for name, w in weights.items() if w > 0]
        self.weights = [weights[name] for name in self.names]
        self.cumulative = list(itertools.accumulate(self.weights))
        self.position = {name: i for i, name in enumerate(self.names)}
        if not self.names:
            raise TrafficError(f"no {what} with channel capacity to choose from")

    def pick(self, rng: random.Random, exclude: str | None = None) -> str:
        """One name; ``exclude`` is never returned (its weight is cut out of the draw)."""
        skip = self.position.get(exclude) if exclude is not None else None
        total = self.cumulative[-1]
        if skip is not None:
            if len(self.names) == 1:
                raise TrafficError(f"no endpoint other than {exclude!r} to choose")
            total -= self.weights[skip]
            if total <= self.cumulative[-1] * 1e-9:     # the rest would drown in rounding
                others = self.names[:skip] + self.names[skip + 1:]
                return rng.choices(others, self.weights[:skip] + self.weights[skip + 1:])[0]
        r = rng.random() * total
        if skip is not None:
            skip_start = self.cumulative[skip - 1] if skip else 0.0
            if r >= skip_start:       # step over the excluded name's interval
                r += self.weights[skip]
        index = min(bisect.bisect_right(self.cumulative, r), len(self.names) - 1)
        if index == skip:             # float rounding at the very end of the range
            index = skip - 1
        return self.names[index]


def endpoint_capacities(topo_or_capacities: Topo | Mapping[str, int],
                        ) -> dict[str, tuple[int, str]]:
    """Each peer's total channel capacity (sat) and role; a plain mapping means routers."""
    if isinstance(topo_or_capacities, Topo):
        topo = topo_or_capacities
        totals = dict.fromkeys(topo.names(), 0)
        for ch in topo.channels:
            totals[ch.a] += ch.capacity_sat
            totals[ch.b] += ch.capacity_sat
        return {p.name: (totals[p.name], p.role) for p in topo.peers}
    result = {}
    for name, capacity_sat in topo_or_capacities.items():
        if not isinstance(capacity_sat, int | float) or capacity_sat < 0:
            raise TrafficError(f"capacity of {name!r} must be a number >= 0, "
                               f"not {capacity_sat!r}")
        result[name] = (capacity_sat, "router")
    return result


def _endpoint_weights(peers: Mapping[str, tuple[int, str]], role_weight: Mapping[str, float],
                      allowed: Sequence[str] | None, what: str) -> dict[str, float]:
    if allowed is not None:
        unknown = sorted(set(allowed) - set(peers))
        if unknown:
            raise TrafficError(f"unknown {what}: {', '.join(unknown)}")
    names = peers if allowed is None else [n for n in peers if n in set(allowed)]
    return {n: peers[n][0] * role_weight.get(peers[n][1], 1.0) for n in names}


def _check_poisson_args(rate_per_s: float, duration_s: float, amount_mean_msat: int,
                        amount_sigma: float, kind: str) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise TrafficError(f"rate_per_s must be positive, not {rate_per_s}")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise TrafficError(f"duration_s must be >= 0, not {duration_s}")
    if amount_mean_msat < MIN_AMOUNT_MSAT:
        raise TrafficError(f"amount_mean_msat must be >= {MIN_AMOUNT_MSAT}, "
                           f"not {amount_mean_msat}")
    if not (math.isfinite(amount_sigma) and amount_sigma >= 0):
        raise TrafficError(f"amount_sigma must be >= 0, not {amount_sigma}")
    if kind not in PAYMENT_KINDS:
        raise TrafficError(f"payment kind {kind!r} is not one of {', '.join(PAYMENT_KINDS)}")


def poisson_schedule(topo_or_capacities: Topo | Mapping[str, int], rate_per_s: float,
                     duration_s: float, amount_mean_msat: int, amount_sigma: float,
                     seed: int, sources: Sequence[str] | None = None,
                     dests: Sequence[str] | None = None,
                     kind: str = "invoice") -> list[Payment]:
    """Random payments over ``duration_s`` seconds, sorted by time, for one seed.

    Arrival times, amounts and endpoints come from three generators seeded from
    ``seed``, so changing the amounts does not move the times or the endpoints.
    ``sources``/``dests`` restrict who may pay and be paid.
    """
    _check_poisson_args(rate_per_s, duration_s, amount_mean_msat, amount_sigma, kind)
    peers = endpoint_capacities(topo_or_capacities)
    payers = _WeightedPicker(_endpoint_weights(peers, SOURCE_ROLE_WEIGHT, sources, "sources"),
                             "source")
    payees = _WeightedPicker(_endpoint_weights(peers, DEST_ROLE_WEIGHT, dests, "dests"),
                             "destination")
    arrivals = random.Random(f"{seed}:arrivals")
    amounts = random.Random(f"{seed}:amounts")
    endpoints = random.Random(f"{seed}:endpoints")
    mu = math.log(amount_mean_msat) - amount_sigma ** 2 / 2   # arithmetic mean = amount_mean
    schedule = []
    elapsed_s = arrivals.expovariate(rate_per_s)
    while (at := round(elapsed_s, 6)) < duration_s:       # microseconds are plenty
        source = payers.pick(endpoints)
        dest = payees.pick(endpoints, exclude=source)
        amount_msat = max(MIN_AMOUNT_MSAT, round(amounts.lognormvariate(mu, amount_sigma)))
        schedule.append(Payment(at, source, dest, amount_msat, kind))
        elapsed_s += arrivals.expovariate(rate_per_s)
    return schedule


def explicit_flows(flows: Sequence[Mapping[str, Any]],
                   duration_s: float | None = None) -> list[Payment]:
    """Payments from fixed flows, sorted by time (ties keep flow order).

    A flow is ``{source, dest, amount_msat}`` plus either ``at`` (one payment at that
    second) or ``rate_per_s`` (payments every ``1 / rate_per_s`` seconds from
    ``start_s``, default 0, for the flow's ``duration_s`` seconds, or until this
    call's ``duration_s`` (seconds from the run's start), or for ``count``
    payments, whichever ends first). ``kind`` defaults to ``invoice``.
    """
    payments: list[Payment] = []
    for i, flow in enumerate(flows):
        payments += _flow_payments(flow, f"flows[{i}]", duration_s)
    return sorted(payments, key=lambda p: p.at)


def _flow_payments(flow: Mapping[str, Any], where: str,
                   duration_s: float | None) -> list[Payment]:
    if not isinstance(flow, Mapping):
        raise TrafficError(f"{where}: a flow must be a table, not {flow!r}")
    unknown = sorted(set(flow) - FLOW_KEYS)
    if unknown:
        raise TrafficError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                           f"valid: {', '.join(sorted(FLOW_KEYS))}")
    missing = [k for k in ("source", "dest", "amount_msat") if k not in flow]
    if missing:
        raise TrafficError(f"{where}: missing {', '.join(missing)}")
    if ("at" in flow) == ("rate_per_s" in flow):
        raise TrafficError(f"{where}: give exactly one of 'at' and 'rate_per_s'")
    times = [flow["at"]] if "at" in flow else _steady_times(flow, where, duration_s)
    try:
        return [Payment(t, flow["source"], flow["dest"], flow["amount_msat"],
                        flow.get("kind", "invoice")) for t in times]
    except TrafficError as exc:
        raise TrafficError(f"{where}: {exc}") from exc


def _steady_times(flow: Mapping[str, Any], where: str, duration_s: float | None) -> list[float]:
    rate_per_s = flow["rate_per_s"]
    if not (isinstance(rate_per_s, int | float) and rate_per_s > 0):
        raise TrafficError(f"{where}: rate_per_s must be positive, not {rate_per_s!r}")
    start_s = flow.get("start_s", 0.0)
    end_s = start_s + flow["duration_s"] if "duration_s" in flow else duration_s
    count = flow.get("count")
    if end_s is None and count is None:
        raise TrafficError(f"{where}: a rate needs 'duration_s' or 'count' to end")
    times: list[float] = []
    while count is None or len(times) < count:
        at = round(start_s + len(times) / rate_per_s, 6)  # multiply, never accumulate
        if end_s is not None and at >= end_s:
            break
        times.append(at)
    return times


def schedule_digest(payments: Sequence[Payment]) -> str:
    """SHA-256 hex of a canonical JSON encoding: equal schedules, equal digests."""
    rows = [[p.at, p.source, p.dest, p.amount_msat, p.kind] for p in payments]
    canonical = json.dumps(rows, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
