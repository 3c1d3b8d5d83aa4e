"""What became of each breach: a revoked commitment broadcast by a cheating peer.

A breach is punished when a revocation branch of the revoked commitment was spent
(the chain's ``penalty`` event names the outpoints it spent): by the victim itself,
or by its watchtower (``tower_justice``). Otherwise the cheater kept what the
revoked state gave it, once its to_self_delay had passed. The report lists every
breach with its outcome and the amounts.
"""
from __future__ import annotations

from typing import Any

from emulator.errors import LnemuError
from emulator.network import Network


def breaches(net: Network) -> list[dict[str, Any]]:
    """Every ``cheat`` of the run: who cheated, and who got the revoked outputs."""
    events = net.sup.collector.events
    penalties = events(kind="penalty")
    justice = {e["data"].get("breach_txid"): e for e in events(kind="tower_justice")}
    found = []
    for cheat in events(kind="cheat"):
        txid = cheat["data"]["txid"]
        punishing = [p for p in penalties
                     if any(op.get("txid") == txid for op in p["data"].get("outpoints", []))]
        record: dict[str, Any] = {
            "cheater": cheat["proc"].removeprefix("peer "), "txid": txid,
            "channel_id": cheat["data"].get("channel_id"),
            "commitment_number": cheat["data"].get("commitment_number"),
            "punished": bool(punishing),
            "punished_by": ("watchtower" if txid in justice else "victim") if punishing
            else None,
            "penalty_txids": sorted({p["data"]["txid"] for p in punishing})}
        record.update(_amounts(net, txid, {p["data"]["txid"] for p in penalties}))
        found.append(record)
    return found


def _amounts(net: Network, txid: str, penalty_txids: set[str]) -> dict[str, Any]:
    """What the breach put on the chain, and how much of the cheater's side of it was
    taken by a penalty or kept (spent by something else)."""
    try:
        tx = net.chain.call("gettx", txid=bytes.fromhex(txid))
    except LnemuError:
        return {"status": "unknown"}
    if tx is None or tx.get("status") != "confirmed":
        return {"status": tx.get("status", "unknown") if tx else "unknown"}
    taken = kept = unresolved = 0
    for vout, out in enumerate(tx["tx"]["outputs"]):
        if out["cond"][0] == "pk":
            continue  # the victim's own to_remote: never the cheater's
        spender = net.chain.call("getspender", txid=bytes.fromhex(txid), vout=vout)
        spent_by = spender.get("txid") if isinstance(spender, dict) else None
        spent_by = spent_by.hex() if isinstance(spent_by, bytes) else spent_by
        if spent_by is None:
            unresolved += out["amount_sat"]
        elif spent_by in penalty_txids:
            taken += out["amount_sat"]
        else:
            kept += out["amount_sat"]
    return {"status": "confirmed", "taken_by_penalty_sat": taken,
            "kept_by_cheater_sat": kept, "unresolved_sat": unresolved}


def markdown(found: list[dict[str, Any]]) -> str:
    """The report.md section on breaches ('' when nobody cheated)."""
    if not found:
        return ""
    lines = ["", "## Breaches", ""]
    for b in found:
        who = f"{b['cheater']} broadcast revoked commitment {b.get('commitment_number')} " \
              f"(`{b['txid'][:16]}…`)"
        if b["punished"]:
            lines.append(f"- {who}: **punished** by the {b['punished_by']}; the penalty took "
                         f"{b.get('taken_by_penalty_sat', 0):,} sat of the cheater's outputs.")
        elif b.get("kept_by_cheater_sat"):
            lines.append(f"- {who}: **not punished** — the victim was not watching and had "
                         f"no watchtower; the cheater kept {b['kept_by_cheater_sat']:,} sat "
                         "of the revoked state.")
        else:
            lines.append(f"- {who}: not punished (yet): {b.get('unresolved_sat', 0):,} sat "
                         f"still unspent on the breach (status {b.get('status')}).")
    return "\n".join(lines) + "\n"
