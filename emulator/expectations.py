"""Scenario expectations (``[[expect]]``): each becomes a Check that held or not."""
from __future__ import annotations

from typing import Any

from emulator.actions import Actions
from emulator.invariants import Check
from emulator.network import Network


def evaluate(expect: list[dict[str, Any]], net: Network, actions: Actions,
             worth: dict[str, dict[str, int]]) -> list[Check]:
    """Evaluate every expectation of the scenario."""
    checks = event_outcomes(actions)
    for exp in expect:
        kind = exp["kind"]
        if kind == "invariants":
            continue  # the invariants are always checked
        checks.append(globals()[f"_{kind}"](exp, net, actions, worth))
    return checks


def event_outcomes(actions: Actions) -> list[Check]:
    """One check per payment event (pay, keysend, message) whose ``expect`` is
    "succeeded" (the default) or "failed": it ended the way the event said."""
    checks = []
    for sent in actions.sent:
        if sent.expect not in ("succeeded", "failed"):
            continue
        out = actions.outcome(sent)
        detail = out["status"] + (f": {out['failure']}" if out.get("failure") else "")
        checks.append(Check(f"expect: {sent.kind} {sent.label!r} {sent.source}->{sent.dest} "
                            f"{sent.expect}", out["status"] == sent.expect, detail))
    return checks


def _balance(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    have = net.rpc(exp["peer"]).call("walletbalance")["confirmed_sat"]
    low, high = exp.get("min_sat", 0), exp.get("max_sat", 2**63)
    return Check(f"expect: {exp['peer']} on-chain balance in [{low}, {high}] sat",
                 low <= have <= high, f"{have} sat")


LIVE_CHANNEL_STATES = ("AWAITING_LOCKIN", "OPEN", "SHUTDOWN", "NEGOTIATING")


def _channel_balance(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    """The peer's side summed over every live channel it has with ``with`` (two peers
    may share more than one channel, e.g. their own and one an LSP opened later)."""
    peer_id = net.node_id(exp["with"])
    sides = [ch.get("local_msat", 0) for ch in net.rpc(exp["peer"]).call("listchannels")
             if ch["peer_id"] == peer_id and ch["state"] in LIVE_CHANNEL_STATES]
    have = sum(sides)
    low, high = exp.get("min_msat", 0), exp.get("max_msat", 2**63)
    name = (f"expect: {exp['peer']}'s side of {exp['peer']}-{exp['with']} in "
            f"[{low:_}, {high:_}] msat")
    if not sides:
        return Check(name, False, "no live channel between them")
    detail = f"{have:_} msat"
    if len(sides) > 1:
        detail += f" over {len(sides)} channels (" + " + ".join(f"{s:_}" for s in sides) + ")"
    return Check(name, low <= have <= high, detail)


def _success_rate(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    outcomes = [actions.outcome(s)["status"] for s in actions.sent]
    rate = outcomes.count("succeeded") / len(outcomes) if outcomes else 0.0
    return Check(f"expect: success rate at least {exp['min']:.0%}", rate >= exp["min"],
                 f"{outcomes.count('succeeded')}/{len(outcomes)} = {rate:.1%}")


def _payment(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    found = [s for s in actions.sent if s.label == exp["label"]]
    if not found:
        return Check(f"expect: payment {exp['label']!r} {exp['status']}", False,
                     "no payment has that label")
    out = actions.outcome(found[0])
    return Check(f"expect: payment {exp['label']!r} {exp['status']}",
                 out["status"] == exp["status"],
                 f"{out['status']}" + (f": {out.get('failure')}" if out.get("failure") else ""))


def _message_delivered(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    inbox = net.rpc(exp["to"]).call("inbox")
    texts = [m["text"] for m in inbox if m.get("verified")]
    want = exp.get("text")
    ok = bool(texts) if want is None else want in texts
    return Check(f"expect: {exp['to']} received message {want!r}", ok,
                 f"inbox has {len(inbox)} message(s)")


def _penalty(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    txids = {e["data"].get("txid") for e in net.sup.collector.events(kind="penalty")}
    return Check(f"expect: at least {exp.get('min', 1)} penalty", len(txids) >= exp.get("min", 1),
                 f"{len(txids)} penalty transaction(s) confirmed")


def _breach(exp: dict, net: Network, actions: Actions, worth: dict) -> Check:
    """Every breach was punished (by whom, if ``by`` says), or none was (punished=false)."""
    from emulator.breaches import breaches
    found = breaches(net)
    want = exp.get("punished", True)
    by = exp.get("by")
    ok = bool(found) and all(b["punished"] == want and (by is None or b["punished_by"] == by)
                             for b in found)
    detail = "; ".join(f"{b['cheater']}: " + (f"punished by the {b['punished_by']}"
                                               if b["punished"] else
                                               f"not punished, kept "
                                               f"{b.get('kept_by_cheater_sat', 0)} sat")
                       for b in found) or "nobody cheated"
    what = ("punished" + (f" by the {by}" if by else "")) if want else "not punished"
    return Check(f"expect: every breach {what}", ok, detail)
