"""Channel records for the store: a plain msgpack-able map and back.

Secrets are not stored: they derive again from the node secret and the channel
index. Everything else a channel needs after a restart is here.
"""
from __future__ import annotations

from typing import Any

from emulator.crypto.shachain import RevocationStore
from emulator.tx import OutPoint
from peers import commitment as cm
from peers.channel import Channel, Params
from peers.channel_state import ChannelState, StateMachine
from peers.htlc_ledger import HtlcLedger
from peers.htlc_types import Side

_PLAIN = ("peer_id", "index", "local_is_opener", "funding_sat", "push_msat", "feerate_per_kw",
          "temp_id", "minimum_depth", "channel_id", "funding_tx", "funding_height",
          "short_channel_id", "preimages", "ready_sent", "ready_received", "shutdown_local",
          "shutdown_remote", "closing_tx", "onchain", "last_sent", "announce")


PRUNE_PREIMAGES_ABOVE = 8  # settled preimages kept before they are dropped


def _live_preimages(ch: Channel) -> dict[bytes, bytes]:
    """Preimages still needed: HTLCs in some kept commitment (older ones are settled).
    Pruned once there are more than a few: finding the live ones walks every HTLC of
    four commitments, too much for every write of a busy channel."""
    if ch.ledger is None or ch.onchain or len(ch.preimages) <= PRUNE_PREIMAGES_ABOVE:
        return ch.preimages
    live = {h.payment_hash for side in (Side.LOCAL, Side.REMOTE)
            for _, h in ch.ledger.htlcs(side, ch.ledger.ctn_oldest_unrevoked(side))
            + ch.ledger.htlcs(side) + ch.ledger.htlcs_pending(side)}
    ch.preimages = {k: v for k, v in ch.preimages.items() if k in live}
    return ch.preimages


def channel_to_wire(ch: Channel, htlcs: bool = True) -> dict[str, Any]:
    """A channel as a plain map; without its ledger's HTLC records if not ``htlcs``
    (the store keeps those apart, written as they change)."""
    _live_preimages(ch)
    record = {name: getattr(ch, name) for name in _PLAIN}
    record.update(
        state=int(ch.state), local=ch.local.to_wire(),
        remote=ch.remote.to_wire() if ch.remote else None,
        funding_outpoint=[ch.funding_outpoint.txid, ch.funding_outpoint.vout]
        if ch.funding_outpoint else None,
        ledger=(ch.ledger.to_wire() if htlcs else ch.ledger.header_to_wire())
        if ch.ledger else None,
        remote_points=[[k, v] for k, v in ch.remote_points.items()],
        revocations=ch.revocations.to_wire(),
        local_sigs=list(ch.local_sigs) if ch.local_sigs else None,
        old_sigs=[[k, v] for k, v in ch.old_sigs.items()] if htlcs else [],  # else apart
        sent_fails=[[k, kind, body] for k, (kind, body) in ch.sent_fails.items()])
    return record


def channel_from_wire(record: dict[str, Any], node_secret: bytes,
                      htlcs: list[dict[str, Any]] | None = None,
                      old_sigs: dict[int, bytes] | None = None) -> Channel:
    """Rebuild a channel from its stored map (secrets derive from ``node_secret``),
    with ``htlcs``, its ledger's HTLC records kept apart, and ``old_sigs``, the peer's
    signatures of our revoked commitments kept apart, if given."""
    plain = {name: record.get(name) for name in _PLAIN}
    plain["preimages"] = dict(plain["preimages"] or {})
    plain["onchain"] = plain["onchain"] or {}
    plain["last_sent"] = plain["last_sent"] or ""
    plain["announce"] = bool(record.get("announce", True))
    ch = Channel(
        **plain, local=Params.from_wire(record["local"]),
        secrets=cm.BaseSecrets.derive(node_secret, record["index"]),
        remote=Params.from_wire(record["remote"]) if record["remote"] else None,
        funding_outpoint=OutPoint(*record["funding_outpoint"])
        if record["funding_outpoint"] else None,
        ledger=HtlcLedger.from_wire(_with_htlcs(record["ledger"], htlcs))
        if record["ledger"] else None,
        remote_points={k: v for k, v in record["remote_points"]},
        revocations=RevocationStore.from_wire(record["revocations"]),
        local_sigs=tuple(record["local_sigs"]) if record["local_sigs"] else None,
        old_sigs={**{k: v for k, v in record.get("old_sigs", [])}, **(old_sigs or {})},
        sent_fails={k: (kind, body) for k, kind, body in record.get("sent_fails", [])},
        sm=StateMachine(ChannelState(record["state"])))
    return ch


def _with_htlcs(ledger: dict[str, Any], htlcs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A ledger record with the HTLC records stored apart (they win over inline ones)."""
    if not htlcs:
        return {"htlcs": [], **ledger}
    merged = {(h["offerer"], h["htlc"]["htlc_id"]): h for h in ledger.get("htlcs", [])}
    merged.update(((h["offerer"], h["htlc"]["htlc_id"]), h) for h in htlcs)
    return {**ledger, "htlcs": list(merged.values())}
