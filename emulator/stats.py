"""Small statistics for run reports: Wilson intervals, percentiles, failure grouping.

Pure functions on plain numbers and strings, with no I/O and no numpy, so that the
summary of a run can be computed and tested without the plotting stack.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from emulator.errors import LnemuError


class StatsError(LnemuError, ValueError):
    """Arguments a statistic is not defined for (negative counts, q outside 0..100)."""

    code = "bad_stats"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when ``n`` is 0."""
    if n < 0 or successes < 0 or successes > n:
        raise StatsError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0  # no trials: every rate is still possible
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # rounding must not push the exact ends (0 of n, n of n) off 0 and 1
    low = 0.0 if successes == 0 else max(0.0, centre - margin)
    high = 1.0 if successes == n else min(1.0, centre + margin)
    return low, high


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise StatsError("percentile of no values")
    if not 0 <= q <= 100:
        raise StatsError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100  # numpy's default "linear" method
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    fraction = rank - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


# A hex id: 8+ hex characters, or 4+ with at least one digit (so words such as
# "added" or "face" survive) but not only digits (those are numbers); optionally
# 0x-prefixed or shortened with ".." ("03ab..", "03ab..9f").
_HEX_ID = re.compile(r"\b(?:0x)?(?![0-9]+\b)(?:[0-9a-f]{8,}|(?=[0-9a-f]*[0-9])[0-9a-f]{4,})\b"
                     r"(?:(?:\.{2,3}|…)[0-9a-f]*)?", re.IGNORECASE)
_SHORT_CHANNEL_ID = re.compile(r"\b\d+x\d+x\d+\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_SPACES = re.compile(r"\s+")

UNKNOWN_REASON = "unknown"


def normalize_reason(reason: str | None) -> str:
    """A failure reason with hex ids, short channel ids and numbers replaced by tags."""
    if not reason or not reason.strip():
        return UNKNOWN_REASON
    text = _HEX_ID.sub("<id>", reason)
    text = _SHORT_CHANNEL_ID.sub("<scid>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()


def group_failures(reasons: Iterable[str | None]) -> dict[str, int]:
    """Count failure reasons by their normalized form, most frequent first."""
    counts = Counter(normalize_reason(reason) for reason in reasons)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
