"""How much a run's outcomes differ from an earlier run of the same scenario and seed.

The same scenario and seed give the same node ids and the same payment schedule
(``schedule_digest``); the outcomes may still differ, because processes interleave
differently from run to run. After a run, :func:`compare` looks for the most recent
earlier run beside it (same scenario, seed and digest) and says by how much:
payments that ended differently, success counts, fees and latency.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"


def outcomes(payments: list[Any]) -> list[list[Any]]:
    """[index, status] of each scheduled payment, for comparing runs payment by payment."""
    return [[p.index, p.status] for p in payments]


def _earlier_runs(run_dir: Path, summary: dict[str, Any]) -> list[tuple[float, Path, dict]]:
    found = []
    for other in run_dir.parent.glob(f"*/{SUMMARY}"):
        if other.parent.resolve() == run_dir.resolve():
            continue
        try:
            data = json.loads(other.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        same = all(data.get(k) == summary.get(k)
                   for k in ("scenario", "seed", "schedule_digest"))
        started = data.get("started_at")
        if same and isinstance(started, (int, float)) and \
                started < summary.get("started_at", float("inf")):
            found.append((started, other.parent, data))
    return sorted(found, key=lambda item: item[0])


def compare(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The comparison with the latest earlier run of the same scenario, seed and schedule
    (``{"compared_with": None, ...}`` when there is none)."""
    earlier = _earlier_runs(Path(run_dir), summary)
    if not earlier:
        return {"compared_with": None,
                "note": f"no earlier run of {summary.get('scenario')!r} with seed "
                        f"{summary.get('seed')} beside this one; run it again to see how "
                        "much the outcomes vary"}
    _, other_dir, other = earlier[-1]
    mine = {i: s for i, s in summary.get("extra", {}).get("outcomes", [])}
    theirs = {i: s for i, s in other.get("extra", {}).get("outcomes", [])}
    differing = sorted(i for i in mine.keys() & theirs.keys() if mine[i] != theirs[i])
    pay, other_pay = summary.get("payments", {}), other.get("payments", {})
    lat, other_lat = summary.get("latency_s", {}), other.get("latency_s", {})
    fees = summary.get("fees", {}).get("paid_total_msat")
    other_fees = other.get("fees", {}).get("paid_total_msat")
    return {
        "compared_with": str(other_dir),
        "same_node_ids": summary.get("node_ids") == other.get("node_ids"),
        "same_schedule": True,  # same digest, by the choice above
        "payments_compared": len(mine.keys() & theirs.keys()),
        "payments_differing": len(differing),
        "differing_indices": differing[:50],
        "succeeded": [pay.get("succeeded"), other_pay.get("succeeded")],
        "failed": [pay.get("failed"), other_pay.get("failed")],
        "fees_paid_total_msat": [fees, other_fees],
        "latency_p50_s": [lat.get("p50"), other_lat.get("p50")],
        "earlier_runs_found": len(earlier),
    }


def markdown(result: dict[str, Any]) -> str:
    """The report.md section for a comparison."""
    lines = ["", "## Reproducibility", ""]
    if result.get("compared_with") is None:
        lines.append(result.get("note", "no earlier run to compare with"))
        return "\n".join(lines) + "\n"
    ok, other_ok = result["succeeded"]
    lat, other_lat = result["latency_p50_s"]
    lines += [
        f"Compared with the earlier run `{result['compared_with']}` (same scenario, seed "
        f"and payment schedule; node ids {'identical' if result['same_node_ids'] else 'DIFFER'}).",
        "",
        f"- payments that ended differently: {result['payments_differing']} of "
        f"{result['payments_compared']}"
        + (f" (indices {', '.join(map(str, result['differing_indices'][:10]))}"
           f"{', ...' if result['payments_differing'] > 10 else ''})"
           if result["payments_differing"] else ""),
        f"- succeeded: {ok} here, {other_ok} there",
        f"- fees paid: {result['fees_paid_total_msat'][0]} msat here, "
        f"{result['fees_paid_total_msat'][1]} msat there",
        f"- latency p50: {_seconds(lat)} here, {_seconds(other_lat)} there",
        "",
        "Outcomes may differ between runs with the same seed: processes interleave "
        "differently (the schedule of payments and faults is the same).",
    ]
    return "\n".join(lines) + "\n"


def _seconds(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, (int, float)) else "-"
