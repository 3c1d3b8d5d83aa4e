"""Tests for run statistics, plots and the written report (summary.json, report.md, PNGs)."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emulator.plots import network_layout, plot_liquidity, spring_layout
from emulator.reporting import (
    GraphChannel,
    GraphNode,
    GraphSnapshot,
    LiquiditySample,
    PaymentRecord,
    ReportError,
    RunData,
    check_dict,
    write_report,
)
from emulator.stats import (
    StatsError,
    group_failures,
    normalize_reason,
    percentile,
    wilson_interval,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("success_over_time", "latency_cdf", "liquidity", "network")
HOP_FAILURES = ("hop 2 (03ab12..) failed: temporary_channel_failure",
                "hop 1 (02ffee9c0d..) failed: temporary_channel_failure")


# --- synthetic data --------------------------------------------------------------

def synthetic_payment(i: int) -> PaymentRecord:
    """Payment ``i``: every 4th fails (2 of 3 such at a hop, 1 of 3 for lack of route)."""
    source, dest = [("alice", "carol"), ("bob", "dave"), ("carol", "alice")][i % 3]
    kind = ("invoice", "keysend", "message")[i % 3]
    if i % 4 == 3:
        failure = (f"no route: {source} -> {dest} for {5000 + i} msat" if i % 3 == 0
                   else HOP_FAILURES[i % 2])
        return PaymentRecord(i, at=i * 0.2, source=source, dest=dest, amount_msat=5000 + i,
                             kind=kind, status="failed", failure=failure, attempts=2)
    return PaymentRecord(i, at=i * 0.2, source=source, dest=dest, amount_msat=5000 + i,
                         kind=kind, status="succeeded", latency_s=0.010 + i / 1000,
                         fee_msat=1 + i % 3, parts=2 if i % 10 == 0 else 1)


def synthetic_liquidity() -> list[LiquiditySample]:
    """Three channels whose balances drift over ten seconds."""
    samples = []
    capacity_msat = 1_000_000_000
    for step in range(21):
        t = step * 0.5
        for k, (a, b) in enumerate((("alice", "bob"), ("bob", "carol"), ("carol", "dave"))):
            a_share = min(1.0, max(0.0, 0.9 - 0.03 * step * (k + 1)))
            a_local = int(capacity_msat * a_share)
            samples.append(LiquiditySample(t, f"{a}-{b}", a, a_local, capacity_msat))
            samples.append(LiquiditySample(t, f"{a}-{b}", b, capacity_msat - a_local - 3_000_000,
                                           capacity_msat))
    return samples


def synthetic_graph() -> GraphSnapshot:
    """Four nodes on a line plus a watchtower, one closed channel."""
    nodes = [GraphNode(name, f"{i + 2:02x}" + "ab" * 32, "peer")
             for i, name in enumerate(("alice", "bob", "carol", "dave"))]
    nodes.append(GraphNode("tower", "03" + "cd" * 32, "watchtower"))
    channels = [GraphChannel("alice-bob", "alice", "bob", 1_000_000, 300_000_000, 697_000_000),
                GraphChannel("bob-carol", "bob", "carol", 500_000, 250_000_000, 247_000_000),
                GraphChannel("carol-dave", "carol", "dave", 200_000, 10_000_000, 187_000_000),
                GraphChannel("alice-dave", "alice", "dave", 100_000, 0, 0, state="CLOSED")]
    return GraphSnapshot(nodes, channels)


def synthetic_run(payments: int = 50) -> RunData:
    """A run with mixed payment outcomes, 3 channels' liquidity and a small graph."""
    graph = synthetic_graph()
    return RunData(
        scenario="synthetic", seed=7, schedule_digest="d1g35t", started_at=1_700_000_000.0,
        duration_s=12.5, payments=[synthetic_payment(i) for i in range(payments)],
        liquidity=synthetic_liquidity(), graph=graph,
        fees_earned_msat={"bob": 40, "carol": 13}, messages={"sent": 17, "delivered": 15},
        penalties=1,
        invariants=[{"name": "no funds created", "ok": True, "detail": "sum 10,000,000 sat"}],
        expectations=[{"name": "success rate >= 70%", "ok": True, "detail": "76%"}],
        node_ids={node.name: node.node_id for node in graph.nodes})


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


# --- stats -----------------------------------------------------------------------

@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (8, 10, 0.4902, 0.9433),
    (1, 10, 0.0179, 0.4042),
    (50, 100, 0.4038, 0.5962),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
])
def test_wilson_interval_known_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    low, high = wilson_interval(3, 7, z=2.576)  # 99%: wider than 95%
    assert low < wilson_interval(3, 7)[0] and high > wilson_interval(3, 7)[1]
    for successes, n in ((11, 10), (-1, 10), (0, -1)):
        with pytest.raises(StatsError):
            wilson_interval(successes, n)


def test_percentile_hand_values():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 25) == 1.75
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([5.5], 99) == 5.5
    values = [0.3, 7.1, 2.2, 9.9, 4.4, 1.0]
    for q in (1, 33, 50, 90, 99):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_rejects_empty_and_bad_q():
    with pytest.raises(StatsError):
        percentile([], 50)
    with pytest.raises(StatsError):
        percentile([1.0], 101)


def test_group_failures_normalizes_ids_and_numbers():
    reasons = [*HOP_FAILURES, "hop 3 (0350aa1122334455..) failed: temporary_channel_failure",
               "no route: alice -> dave for 5000 msat", "no route: alice -> dave for 123 msat",
               "channel 103x1x0 closed", "channel 7x2x1 closed", None, ""]
    assert group_failures(reasons) == {
        "hop <n> (<id>) failed: temporary_channel_failure": 3,
        "channel <scid> closed": 2,
        "no route: alice -> dave for <n> msat": 2,
        "unknown": 2,
    }


def test_normalize_reason_keeps_words_that_look_like_hex():
    assert normalize_reason("fee added to a bad face") == "fee added to a bad face"
    assert normalize_reason("htlc deadbeefcafe0123 expired") == "htlc <id> expired"
    assert normalize_reason("0x03abcdef timed out after 1.5 s") == "<id> timed out after <n> s"


# --- records ---------------------------------------------------------------------

def test_payment_record_rejects_unknown_status_and_kind():
    with pytest.raises(ReportError):
        PaymentRecord(0, 0.0, "a", "b", 1, "invoice", "pending")
    with pytest.raises(ReportError):
        PaymentRecord(0, 0.0, "a", "b", 1, "swap", "failed")


def test_check_dict_accepts_dataclasses_and_rejects_junk():
    @dataclass
    class Check:
        name: str
        ok: bool
        detail: str

    assert check_dict(Check("x", False, "why")) == {"name": "x", "ok": False, "detail": "why"}
    assert check_dict({"name": "y", "ok": 1}) == {"name": "y", "ok": True, "detail": ""}
    with pytest.raises(ReportError):
        check_dict({"ok": True})


def test_run_data_to_dict_is_json_and_graph_round_trips():
    data = synthetic_run(5)
    plain = json.loads(json.dumps(data.to_dict()))
    assert len(plain["payments"]) == 5 and plain["payments"][3]["status"] == "failed"
    assert GraphSnapshot.from_dict(plain["graph"]) == data.graph
    with pytest.raises(ReportError):
        GraphSnapshot.from_dict({"nodes": [{"nom": "x"}]})


def test_spring_layout_is_deterministic_and_bounded():
    names = ["a", "b", "c", "d", "e"]
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")]
    first = spring_layout(names, edges, seed=3)
    assert first == spring_layout(names, edges, seed=3)
    assert all(-1.0 <= x <= 1.0 and -1.0 <= y <= 1.0 for x, y in first.values())
    assert len({(round(x, 3), round(y, 3)) for x, y in first.values()}) == 5  # no overlap
    assert spring_layout(["solo"], [], seed=1) == {"solo": (0.0, 0.0)}


def test_network_layout_puts_nodes_without_channels_in_a_row_beneath():
    pos = network_layout(["a", "b", "c", "tower1", "tower2"], [("a", "b"), ("b", "c")], seed=1)
    lowest_linked = min(pos[n][1] for n in "abc")
    assert pos["tower1"][1] == pos["tower2"][1] < lowest_linked


# --- write_report ----------------------------------------------------------------

@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The synthetic run's report, written once for the tests that read it."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, write_report(run_dir, synthetic_run())


def test_write_report_writes_every_file(written):
    run_dir, paths = written
    assert set(paths) == {*PLOTS, "report", "summary"}
    for name in PLOTS:
        assert paths[name] == run_dir / f"{name}.png"
        width, height = png_size(paths[name])
        assert 400 <= width <= 2000 and 300 <= height <= 1500, (name, width, height)
        assert paths[name].stat().st_size > 10_000


def test_summary_counts_rate_ci_and_percentiles(written):
    run_dir, paths = written
    summary = json.loads(paths["summary"].read_text())
    payments = summary["payments"]
    assert (payments["attempted"], payments["succeeded"], payments["failed"]) == (50, 38, 12)
    assert payments["success_rate"] == pytest.approx(0.76)
    assert payments["success_rate_ci95"] == pytest.approx(list(wilson_interval(38, 50)))
    assert payments["success_rate_ci95"] == pytest.approx([0.6259, 0.8570], abs=5e-4)
    assert payments["failures_by_reason"] == {
        "hop <n> (<id>) failed: temporary_channel_failure": 8,
        "no route: alice -> carol for <n> msat": 4}
    latencies = [0.010 + i / 1000 for i in range(50) if i % 4 != 3]
    for q in (50, 90, 99):
        assert summary["latency_s"][f"p{q}"] == pytest.approx(np.percentile(latencies, q))
    assert summary["latency_s"]["count"] == 38
    assert summary["fees"]["earned_msat"] == {"bob": 40, "carol": 13}
    assert sum(summary["fees"]["paid_msat"].values()) == summary["fees"]["paid_total_msat"] > 0
    assert summary["messages"] == {"sent": 17, "delivered": 15}
    assert (summary["seed"], summary["schedule_digest"], summary["penalties"]) == (7, "d1g35t", 1)
    assert summary["node_ids"]["alice"].startswith("02ab")
    assert summary["ok"] is True
    assert summary["files"]["network"] == "network.png"
    assert (run_dir / summary["files"]["report"]).exists()


def test_report_md_mentions_results_and_links_plots(written):
    _, paths = written
    text = paths["report"].read_text(encoding="utf-8")
    assert text.startswith("# lnemu run report: synthetic")
    assert "`7`" in text and "d1g35t" in text
    assert "76.0% (62.6%–85.7%)" in text
    assert "hop <n> (<id>) failed: temporary_channel_failure" in text
    assert "✅ **no funds created** — sum 10,000,000 sat" in text
    for name in PLOTS:
        assert f"]({name}.png)" in text
    assert "| bob | 26 | 40 |" in text


def test_failed_check_makes_report_not_ok(tmp_path):
    data = synthetic_run(4)
    data.expectations.append({"name": "all paid", "ok": False, "detail": "1 failed"})
    paths = write_report(tmp_path, data)
    assert json.loads(paths["summary"].read_text())["ok"] is False
    assert "❌ **all paid** — 1 failed" in paths["report"].read_text(encoding="utf-8")


def test_empty_run_still_writes_everything(tmp_path):
    paths = write_report(tmp_path / "empty", RunData(scenario="empty", seed=0))
    summary = json.loads(paths["summary"].read_text())
    assert summary["payments"]["attempted"] == 0
    assert summary["payments"]["success_rate"] is None
    assert summary["payments"]["success_rate_ci95"] == [0.0, 1.0]
    assert summary["latency_s"]["p50"] is None and summary["ok"] is True
    text = paths["report"].read_text(encoding="utf-8")
    assert "No payment succeeded" in text and "No payment failed" in text
    for name in PLOTS:
        png_size(paths[name])


@pytest.mark.filterwarnings("error")
def test_burst_of_failures_and_a_crowded_liquidity_plot_draw_cleanly(tmp_path):
    failures = [PaymentRecord(i, 0.0, "a", "b", 1000, "keysend", "failed",
                              failure=f"hop {i} (02{i:04x}aa..) failed: unknown_next_peer")
                for i in range(5)]
    paths = write_report(tmp_path / "burst", RunData("burst", 1, payments=failures))
    summary = json.loads(paths["summary"].read_text())
    assert summary["payments"]["failures_by_reason"] == {
        "hop <n> (<id>) failed: unknown_next_peer": 5}
    assert summary["latency_s"]["p99"] is None
    sides = [(float(t), f"ch{c}", side, (t * (c + 1) % 10) / 10)
             for c in range(20) for t in range(10) for side in ("x", "y")]
    png_size(plot_liquidity(sides, tmp_path / "crowded.png"))
