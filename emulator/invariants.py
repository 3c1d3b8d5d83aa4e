"""The invariants the runner checks after every run (../shared/DESIGN.md).

Each check returns a :class:`Check` naming what held or what broke, so a report can
list them and a chaos run can count violations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emulator.envelope import to_plain
from emulator.network import Network


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def peer_worth_msat(net: Network, name: str) -> dict[str, int]:
    """A peer's wallet, its side of each live channel, and HTLCs it offered in flight."""
    wallet_msat = net.rpc(name).call("walletbalance")["confirmed_sat"] * 1000
    local_msat = offered_msat = 0
    for ch in net.rpc(name).call("listchannels"):
        if ch["state"] in ("OPEN", "SHUTDOWN", "NEGOTIATING", "AWAITING_LOCKIN") and \
                "local_msat" in ch:
            local_msat += ch["local_msat"]
            offered_msat += sum(h["amount_msat"] for h in ch["htlcs"] if h["direction"] == "out")
    return {"wallet_msat": wallet_msat, "channels_msat": local_msat,
            "offered_msat": offered_msat,
            "total_msat": wallet_msat + local_msat + offered_msat}


def chain_checks(net: Network) -> list[Check]:
    verify = net.chain.call("verify")
    return [Check("chain: UTXO set rebuilt from blocks matches, sum = genesis supply",
                  verify["ok"], json.dumps(to_plain({k: v for k, v in verify.items()
                                                     if k != "tip"})))]


def wealth_check(net: Network, worth: dict[str, dict[str, int]]) -> Check:
    """Peers' worth plus the miner's fees equals the genesis supply, to the msat."""
    miner_msat = 1000 * sum(c["amount_sat"] for c in
                            net.chain.call("listunspent", pubkey=net.miner_key))
    total = sum(w["total_msat"] for w in worth.values()) + miner_msat
    return Check("wealth: peers (wallets + channel balances + HTLCs in flight) + miner = supply",
                 total == net.supply_sat * 1000,
                 f"peers {total - miner_msat} msat + miner {miner_msat} msat = {total} msat, "
                 f"supply {net.supply_sat * 1000} msat")


def channel_agreement(net: Network, names: list[str]) -> Check:
    """Both ends of every open, quiet channel agree on the balances."""
    views: dict[bytes, list[dict[str, Any]]] = {}
    for name in names:
        for ch in net.rpc(name).call("listchannels"):
            if ch["state"] == "OPEN" and ch.get("quiescent"):
                views.setdefault(ch["channel_id"], []).append(ch)
    wrong = [cid.hex()[:16] for cid, pair in views.items() if len(pair) == 2 and (
        pair[0]["local_msat"] != pair[1]["remote_msat"] or
        pair[0]["remote_msat"] != pair[1]["local_msat"])]
    return Check("channels: both ends agree on every quiet channel's balances", not wrong,
                 "all agree" if not wrong else f"disagree: {', '.join(wrong)}")


def no_stuck_htlcs(net: Network, names: list[str], height: int) -> Check:
    """No HTLC has outlived its expiry unresolved."""
    stuck = [f"{name}:{h['id']}" for name in names
             for ch in net.rpc(name).call("listchannels") if ch["state"] == "OPEN"
             for h in ch.get("htlcs", []) if h["cltv_expiry"] <= height]
    return Check("HTLCs: none outlived its expiry", not stuck,
                 "none" if not stuck else ", ".join(stuck))


def no_data_loss(net: Network) -> Check:
    """No peer found its counterparty ahead of its own state (it lost data)."""
    lost = net.sup.collector.events(kind="data_loss")
    return Check("persistence: no peer lost channel state", not lost,
                 "none" if not lost else "; ".join(f"{e['proc']} channel "
                                                   f"{e['data']['channel_id'][:16]}"
                                                   for e in lost[:5]))


def no_channel_failures(net: Network) -> Check:
    """No channel was failed for a protocol violation (no byzantine fault was injected)."""
    failed = net.sup.collector.events(kind="channel_failed")
    return Check("protocol: no channel failed for a violation", not failed,
                 "none" if not failed else "; ".join(f"{e['proc']}: {e['data']['reason'][:80]}"
                                                     for e in failed[:5]))


def no_forward_losses(net: Network) -> Check:
    """No forwarding peer paid downstream and could not claim the HTLC upstream."""
    lost = net.sup.collector.events(kind="forward_upstream_lost")
    return Check("forwarding: every settled forward was settled upstream too", not lost,
                 "none" if not lost else "; ".join(f"{e['proc']}: {e['data']['error'][:80]}"
                                                   for e in lost[:5]))
