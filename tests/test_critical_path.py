"""The benchmark's account of where an unloaded payment's time goes (bench/critical_path)."""
from __future__ import annotations

from bench.critical_path import channel_names, milestones


def event(ts: float, peer: str, kind: str, **data) -> dict:
    return {"ts": ts, "proc": f"peer {peer}", "kind": kind, "data": data}


def payment(start: float, slow: float = 0.0) -> list[dict]:
    """One 1-hop payment a->b on channel "ab", its events ``start`` + ms."""
    ms = lambda t: start + t / 1000  # noqa: E731
    return [
        event(ms(1.0), "a", "htlc_offered", channel_id="ab"),
        event(ms(1.2), "a", "commitment_signed", channel_id="ab", side="remote"),
        event(ms(2.0 + slow), "b", "htlc_received", channel_id="ab"),
        event(ms(2.3 + slow), "b", "revocation", channel_id="ab", side="local"),
        event(ms(2.5 + slow), "b", "commitment_signed", channel_id="ab", side="remote"),
        event(ms(3.0 + slow), "a", "revocation", channel_id="ab", side="remote"),
        event(ms(3.2 + slow), "a", "revocation", channel_id="ab", side="local"),
        event(ms(4.0 + slow), "b", "revocation", channel_id="ab", side="remote"),
        event(ms(4.1 + slow), "b", "htlc_settled", channel_id="ab", direction="in"),
        event(ms(4.6 + slow), "a", "htlc_settled", channel_id="ab", direction="out"),
        event(ms(4.7 + slow), "a", "payment_succeeded"),
    ]


def test_channels_are_named_by_the_peers_that_offered_and_received_on_them():
    events = payment(100.0) + [event(100.5, "c", "htlc_offered", channel_id="cd")]
    assert channel_names(events) == {"ab": "a-b"}  # cd: no receiver seen, no name


def test_milestones_follow_the_payment_in_order_with_median_times_and_steps():
    windows = [(100.0, 100.005), (200.0, 200.006), (300.0, 300.0052)]
    events = payment(100.0) + payment(200.0, slow=1.0) + payment(300.0)
    events.append(event(100.0052, "b", "commitment_signed", channel_id="ab", side="remote"))
    events.append(event(150.0, "a", "htlc_offered", channel_id="ab"))  # between payments
    rows = milestones(events, windows)
    names = [r["milestone"] for r in rows]
    assert names == [
        "a sends update_add_htlc on a-b", "a sends commitment_signed on a-b",
        "b gets update_add_htlc on a-b", "b sends revoke_and_ack on a-b",
        "b sends commitment_signed on a-b", "a gets revoke_and_ack on a-b",
        "a sends revoke_and_ack on a-b", "b gets revoke_and_ack on a-b",
        "b sends update_fulfill_htlc on a-b", "a gets update_fulfill_htlc on a-b",
        "a payment_succeeded", "reply",
    ]  # the trailing commitment_signed of one payment only is not a milestone
    by_name = {r["milestone"]: r for r in rows}
    assert by_name["a sends update_add_htlc on a-b"] == {
        "milestone": "a sends update_add_htlc on a-b", "at_ms": 1.0, "step_ms": 1.0}
    assert by_name["b gets update_add_htlc on a-b"]["at_ms"] == 2.0  # median of 2, 3, 2
    assert by_name["b gets update_add_htlc on a-b"]["step_ms"] == 0.8
    assert by_name["reply"]["at_ms"] == 5.2
    assert by_name["reply"]["step_ms"] == 0.3  # the median of 0.3, 0.3 and 0.5


def test_a_second_event_of_the_same_name_is_its_own_milestone():
    events = payment(100.0)
    events.append(event(100.0048, "b", "commitment_signed", channel_id="ab", side="remote"))
    rows = milestones(events, [(100.0, 100.005)])
    assert [r["milestone"] for r in rows][-3:] == [
        "a payment_succeeded", "b sends commitment_signed on a-b (2)", "reply"]


def test_no_payments_no_milestones():
    assert milestones(payment(100.0), []) == []
