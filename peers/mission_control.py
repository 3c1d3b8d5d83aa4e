"""Mission control: what past payment attempts taught us about channel liquidity.

Pure logic, no I/O. Each channel direction (short_channel_id, source, dest) keeps its
latest failure ("could not carry F msat": liquidity < F) and latest success ("carried
S msat": liquidity >= S). Liquidity is modelled as uniform between those bounds, so the
probability that a channel carries ``a`` msat is ``(hi - a) / (hi - lo)``; with nothing
learnt, ``lo = 0`` and ``hi = capacity + 1``, which gives the a-priori ``1 - a/capacity``.
What was learnt fades with a half-life: an observation made ``t`` seconds ago still holds
with weight ``2 ** (-t / half_life_s)``, and the probability is the mix of the cases
(each observation holding or not), so it returns to the a-priori. A failed node (could
not forward at all) scales the probability of every channel it forwards over by
``1 - weight``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emulator.errors import DecodeError

if TYPE_CHECKING:
    from peers.graph import Edge

PairKey = tuple[int, bytes, bytes]  # (short_channel_id, source, dest): one direction


@dataclass(frozen=True)
class Observation:
    """One attempt's outcome on a channel direction: the amount and when."""

    amount_msat: int
    at: float


@dataclass
class PairHistory:
    """The latest failure and success seen on one channel direction."""

    failure: Observation | None = None
    success: Observation | None = None


class MissionControl:
    """Memory of failed and succeeded attempts, turned into success probabilities."""

    def __init__(self, half_life_s: float = 3600.0, min_probability: float = 1e-3) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be positive, got {half_life_s!r}")
        if not 0 < min_probability <= 1:
            raise ValueError(f"min_probability must be in (0, 1], got {min_probability!r}")
        self.half_life_s = float(half_life_s)
        self.min_probability = float(min_probability)
        self.pairs: dict[PairKey, PairHistory] = {}
        self.node_failures: dict[bytes, float] = {}

    # --- learning ---------------------------------------------------------------------

    def _is_fresh(self, observation: Observation, now: float) -> bool:
        return now - observation.at < self.half_life_s

    def record_failure(self, short_channel_id: int, source: bytes, dest: bytes,
                       amount_msat: int, now: float) -> None:
        """The channel direction could not carry ``amount_msat``: its liquidity is lower."""
        history = self.pairs.setdefault((short_channel_id, source, dest), PairHistory())
        held = history.failure
        # A fresh failure at a smaller amount is the tighter bound: keep it.
        if held is None or not (held.amount_msat < amount_msat and self._is_fresh(held, now)):
            history.failure = Observation(amount_msat, now)
        if history.success is not None and history.success.amount_msat >= amount_msat:
            history.success = None  # the older success contradicts what we just saw

    def record_success(self, short_channel_id: int, source: bytes, dest: bytes,
                       amount_msat: int, now: float) -> None:
        """The channel direction carried ``amount_msat``: its liquidity was at least that."""
        history = self.pairs.setdefault((short_channel_id, source, dest), PairHistory())
        held = history.success
        if held is None or not (held.amount_msat > amount_msat and self._is_fresh(held, now)):
            history.success = Observation(amount_msat, now)
        if history.failure is not None and history.failure.amount_msat <= amount_msat:
            history.failure = None

    def record_node_failure(self, node_id: bytes, now: float) -> None:
        """The node could not forward at all (offline, or failing every HTLC)."""
        self.node_failures[node_id] = now

    def prune(self, now: float, half_lives: float = 20.0) -> None:
        """Forget observations older than ``half_lives`` half-lives (they weigh ~nothing)."""
        horizon_s = half_lives * self.half_life_s
        for key, history in list(self.pairs.items()):
            if history.failure is not None and now - history.failure.at > horizon_s:
                history.failure = None
            if history.success is not None and now - history.success.at > horizon_s:
                history.success = None
            if history.failure is None and history.success is None:
                del self.pairs[key]
        self.node_failures = {node: at for node, at in self.node_failures.items()
                              if now - at <= horizon_s}

    # --- estimating -------------------------------------------------------------------

    def weight(self, at: float, now: float) -> float:
        """How much an observation made at ``at`` still counts at ``now`` (1 fresh, → 0)."""
        return 0.5 ** (max(0.0, now - at) / self.half_life_s)

    def probability(self, edge: Edge, amount_msat: int, now: float) -> float:
        """The chance, in [min_probability, 1], that ``edge`` carries ``amount_msat`` now."""
        hi = edge.capacity_msat + 1
        history = self.pairs.get((edge.short_channel_id, edge.source, edge.dest))
        failure = history.failure if history is not None else None
        success = history.success if history is not None else None
        # Each observation still holds with its weight: mix the four cases.
        fail_weight = 0.0 if failure is None else self.weight(failure.at, now)
        success_weight = 0.0 if success is None else self.weight(success.at, now)
        fail_hi = hi if failure is None else min(failure.amount_msat, hi)
        success_lo = 0 if success is None else success.amount_msat
        probability = 0.0
        for weight, lo_msat, hi_msat in (
            ((1 - fail_weight) * (1 - success_weight), 0, hi),
            (fail_weight * (1 - success_weight), 0, fail_hi),
            ((1 - fail_weight) * success_weight, success_lo, hi),
            (fail_weight * success_weight, success_lo, fail_hi),
        ):
            if weight > 0:
                probability += weight * _uniform_probability(amount_msat, lo_msat, hi_msat)
        failed_at = self.node_failures.get(edge.source)
        if failed_at is not None:
            probability *= 1.0 - self.weight(failed_at, now)
        return min(1.0, max(self.min_probability, probability))

    # --- persistence ------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """A plain msgpack-able map of everything learnt."""
        pairs = []
        for (scid, source, dest), history in sorted(self.pairs.items()):
            failure, success = history.failure, history.success
            pairs.append([
                scid, source, dest,
                None if failure is None else failure.amount_msat,
                None if failure is None else failure.at,
                None if success is None else success.amount_msat,
                None if success is None else success.at,
            ])
        return {"half_life_s": self.half_life_s, "min_probability": self.min_probability,
                "pairs": pairs,
                "node_failures": [[node, at] for node, at in sorted(self.node_failures.items())]}

    @classmethod
    def from_wire(cls, obj: Any) -> MissionControl:
        """Rebuild from :meth:`to_wire`; DecodeError if the map is malformed."""
        try:
            mission = cls(obj["half_life_s"], obj["min_probability"])
            for scid, source, dest, fail_msat, fail_at, ok_msat, ok_at in obj["pairs"]:
                if not (isinstance(scid, int) and isinstance(source, bytes)
                        and isinstance(dest, bytes)):
                    raise TypeError(f"bad channel direction {scid!r}")
                mission.pairs[(scid, source, dest)] = PairHistory(
                    _observation(fail_msat, fail_at), _observation(ok_msat, ok_at))
            for node, at in obj["node_failures"]:
                if not isinstance(node, bytes):
                    raise TypeError(f"bad node id {node!r}")
                mission.node_failures[node] = float(at)
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"mission control: malformed stored data: {exc!r}") from None
        return mission


def _uniform_probability(amount_msat: int, lo_msat: int, hi_msat: int) -> float:
    """P(liquidity >= amount) for liquidity uniform in [lo, hi): surely lo, surely not hi."""
    if amount_msat <= lo_msat:
        return 1.0
    if amount_msat >= hi_msat:
        return 0.0
    return (hi_msat - amount_msat) / (hi_msat - lo_msat)


def _observation(amount_msat: Any, at: Any) -> Observation | None:
    if amount_msat is None and at is None:
        return None
    if not isinstance(amount_msat, int):
        raise TypeError(f"bad amount {amount_msat!r}")
    return Observation(amount_msat, float(at))
