"""Where an unloaded payment's time goes, read from the events the processes report.

The latency phase of ``payments_bench`` makes its payments one at a time, so every
event emitted between a payment's request and its reply belongs to that payment. Each
such event is a *milestone*: who emitted it, what it says (``b sends revoke_and_ack on
a-b``), and its occurrence among the payment's events of the same name (a peer that
signs twice on one channel has a first and a second). A milestone's time is its offset
from the request; its step is the time since the milestone before it, taken payment by
payment and then the median, so that one slow payment does not shift the whole table.

Channels are named by the peers at their ends (``a-b``), learnt from the events
themselves: the ``htlc_offered`` and ``htlc_received`` of one channel come from its two
ends. Event times are wall-clock (``time.time()``) in every process of one machine.
"""
from __future__ import annotations

import collections
import statistics
from typing import Any

# what each kind says, by the field that tells its direction
_WORDING = {
    ("revocation", "local"): "sends revoke_and_ack",
    ("revocation", "remote"): "gets revoke_and_ack",
    ("commitment_signed", "remote"): "sends commitment_signed",
    ("htlc_settled", "in"): "sends update_fulfill_htlc",
    ("htlc_settled", "out"): "gets update_fulfill_htlc",
    ("htlc_offered", None): "sends update_add_htlc",
    ("htlc_received", None): "gets update_add_htlc",
}
SHARE = 0.9  # a milestone counts if it shows in at least this share of the payments


def channel_names(events: list[dict[str, Any]]) -> dict[str, str]:
    """channel_id -> "offerer-receiver", from the ends that offered and received on it."""
    offered: dict[str, str] = {}
    received: dict[str, str] = {}
    for e in events:
        cid = e["data"].get("channel_id")
        if e["kind"] == "htlc_offered":
            offered.setdefault(cid, _peer(e))
        elif e["kind"] == "htlc_received":
            received.setdefault(cid, _peer(e))
    return {cid: f"{offered[cid]}-{received[cid]}" for cid in offered if cid in received}


def _peer(event: dict[str, Any]) -> str:
    return event["proc"].removeprefix("peer ")


def _label(event: dict[str, Any], channels: dict[str, str]) -> str:
    data = event["data"]
    kind = event["kind"]
    side = data.get("side", data.get("direction"))
    what = _WORDING.get((kind, side)) or _WORDING.get((kind, None)) or kind
    cid = data.get("channel_id")
    where = f" on {channels.get(cid, cid[:8] if isinstance(cid, str) else cid)}" if cid else ""
    return f"{_peer(event)} {what}{where}"


def milestones(events: list[dict[str, Any]], windows: list[tuple[float, float]],
               share: float = SHARE) -> list[dict[str, Any]]:
    """The milestones of payments made one at a time, in the order they happen.

    ``windows`` holds each payment's (request, reply) wall-clock times. Returns, for each
    milestone seen in at least ``share`` of the payments, its median offset from the
    request (``at_ms``) and the median time since the milestone before it (``step_ms``),
    ending with the reply itself.
    """
    if not windows:
        return []
    channels = channel_names(events)
    ordered = sorted(events, key=lambda e: e["ts"])
    offsets: dict[str, list[float]] = collections.defaultdict(list)
    per_payment: list[dict[str, float]] = []
    i = 0
    for start, end in sorted(windows):
        while i < len(ordered) and ordered[i]["ts"] < start:
            i += 1
        seen: collections.Counter[str] = collections.Counter()
        mine: dict[str, float] = {}
        while i < len(ordered) and ordered[i]["ts"] <= end:
            label = _label(ordered[i], channels)
            seen[label] += 1
            if seen[label] > 1:
                label = f"{label} ({seen[label]})"
            mine[label] = ordered[i]["ts"] - start
            offsets[label].append(mine[label])
            i += 1
        mine["reply"] = end - start
        offsets["reply"].append(end - start)
        per_payment.append(mine)
    kept = [label for label, found in offsets.items() if len(found) >= share * len(windows)]
    kept.sort(key=lambda label: statistics.median(offsets[label]))
    rows = []
    for before, label in zip([None, *kept], kept, strict=False):
        steps = [p[label] - (p[before] if before else 0.0) for p in per_payment
                 if label in p and (before is None or before in p)]
        rows.append({"milestone": label,
                     "at_ms": round(1000 * statistics.median(offsets[label]), 3),
                     "step_ms": round(1000 * statistics.median(steps), 3)})
    return rows


def print_milestones(rows: list[dict[str, Any]], payments: int) -> None:
    """The table of ``milestones``, one line each."""
    if not rows:
        return
    print(f"\nwhere an unloaded 3-hop payment's time goes (median of {payments} payments; "
          "step = since the line above):")
    print(f"  {'at ms':>7} {'step':>6}  milestone")
    for row in rows:
        print(f"  {row['at_ms']:>7.2f} {row['step_ms']:>6.2f}  {row['milestone']}")
