"""The fault catalogue: every fault the emulator can inject, and how each heals.

Each fault is one function on a running :class:`Network`; each is logged as an event
(``fault`` with its kind and parameters, ``heal`` when undone). Process faults act on
the OS processes (kill -9 and restart from disk, SIGSTOP/SIGCONT, clean stop); link
faults go to the session layer of the peers involved (delay with jitter, loss,
duplication, reordering, partition); chain faults use the chain's fault verbs (pause
mining, reorg, censor, fee spike); byzantine faults make a peer misbehave (broadcast
a revoked commitment, send a malformed message, hold HTLCs, withhold revocations,
flood gossip).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import zmq

from emulator.errors import BadRequest, LnemuError
from emulator.events import EventEmitter
from emulator.network import Network

log = logging.getLogger("lnemu.faults")
_emitters: dict[str, EventEmitter] = {}  # by collector endpoint (unique per run)


HEAL_TIMEOUT_S = 2.0  # a paused peer never answers: do not wait for it long


def _emit(net: Network, kind: str, **data: Any) -> None:
    endpoint = net.sup.events_endpoint
    emitter = _emitters.get(endpoint)
    if emitter is None:
        emitter = EventEmitter(zmq.Context.instance(), endpoint, "nemesis", log)
        _emitters[endpoint] = emitter
    emitter.emit(kind, **data)


def _peer(net: Network, name: str) -> str:
    if name not in net.plans:
        raise BadRequest(f"unknown peer {name!r}; peers: {', '.join(net.plans)}")
    return name


# --- process faults --------------------------------------------------------------
def kill(net: Network, peer: str) -> None:
    """kill -9 a peer (heal: restart it from its data directory)."""
    net.process(_peer(net, peer)).kill()


def restart(net: Network, peer: str) -> None:
    """Start a killed or stopped peer again from disk."""
    proc = net.process(_peer(net, peer))
    if not proc.running:
        net.restart(peer, died_on_purpose=True)


def pause(net: Network, peer: str) -> None:
    """SIGSTOP a peer's process group (heal: SIGCONT)."""
    net.process(_peer(net, peer)).pause()


def resume(net: Network, peer: str) -> None:
    net.process(_peer(net, peer)).resume()


def stop(net: Network, peer: str) -> None:
    """Stop a peer cleanly (heal: restart)."""
    net.process(_peer(net, peer)).stop()


# --- link faults -------------------------------------------------------------------
def _answers(net: Network, name: str) -> bool:
    """Can ``name`` take a call now (started, not exited, not paused)?"""
    proc = net.process(name)
    return proc.running and not proc.paused


def link(net: Network, peer: str, to: str, seed: int = 0, **params: Any) -> None:
    """Faults on the link from ``peer`` to ``to`` (one direction): delay_ms, jitter_ms,
    loss, duplicate, reorder (probabilities); heal: dev_heal."""
    if net.process(_peer(net, peer)).paused:  # it would not answer: fail now, not in 10 s
        raise LnemuError(f"{peer} is paused: its link faults cannot be set now",
                         code="peer_paused")
    net.rpc(_peer(net, peer)).call("dev_linkfaults", node_id=net.node_id(_peer(net, to)),
                                   seed=seed, **params)


def partition(net: Network, peers: list[str]) -> None:
    """Cut ``peers`` off from everyone else, both ways (heal: heal_links). Each side
    drops what comes from the other, so a paused peer (which answers nothing) is cut
    off by the other side alone; waiting for it would stall the whole schedule."""
    inside = {_peer(net, p) for p in peers}
    for a in inside:
        for b in set(net.plans) - inside:
            for x, y in ((a, b), (b, a)):
                if _answers(net, x):
                    net.rpc(x).call("dev_linkfaults", node_id=net.node_id(y), partitioned=True)


def heal_links(net: Network) -> None:
    """Remove every link fault; a peer that does not answer (paused) does not keep the
    others from being healed, and is named in the error raised afterwards."""
    unreachable = []
    for name in net.plans:
        if net.process(name).paused:
            unreachable.append(f"{name} (paused)")
        elif net.process(name).running:
            try:
                net.rpc(name).call("dev_heal", reply_timeout=HEAL_TIMEOUT_S)
            except LnemuError as exc:
                unreachable.append(f"{name} ({exc.__class__.__name__})")
    if unreachable:
        raise LnemuError(f"link faults left on {', '.join(unreachable)}: no answer",
                         code="heal_incomplete")


# --- chain faults ----------------------------------------------------------------------
def pause_mining(net: Network) -> None:
    net.chain.call("pausemining")


def resume_mining(net: Network) -> None:
    net.chain.call("resumemining")


def reorg(net: Network, depth: int = 2) -> None:
    """Replace the last ``depth`` blocks with a longer branch (their txs return)."""
    net.chain.call("reorg", depth=depth)


def censor(net: Network, txid: Any, blocks: int = 3) -> None:
    net.chain.call("censor", txid=txid, blocks=blocks)


def feespike(net: Network, min_feerate_sat_per_kb: int = 20_000, blocks: int = 3) -> None:
    net.chain.call("feespike", min_feerate_sat_per_kb=min_feerate_sat_per_kb, blocks=blocks)


# --- byzantine peers ----------------------------------------------------------------
def cheat(net: Network, peer: str, to: str) -> None:
    """``peer`` broadcasts a revoked commitment of its channel with ``to``."""
    for ch in net.rpc(_peer(net, peer)).call("listchannels"):
        if ch["peer_id"] == net.node_id(_peer(net, to)) and ch["state"] == "OPEN":
            net.rpc(peer).call("cheat", channel_id=ch["channel_id"])
            return
    raise LnemuError(f"{peer} has no open channel with {to}", code="not_found")


def malformed(net: Network, peer: str, to: str) -> None:
    """``peer`` sends ``to`` an HTLC with an out-of-order id: BOLT 2 fails the channel."""
    for ch in net.rpc(_peer(net, peer)).call("listchannels"):
        if ch["peer_id"] == net.node_id(_peer(net, to)) and ch["state"] == "OPEN":
            net.rpc(peer).call("dev_sendraw", node_id=net.node_id(to), type="update_add_htlc",
                               body={"channel_id": ch["channel_id"], "id": 10**6,
                                     "amount_msat": 1000, "payment_hash": os.urandom(32),
                                     "cltv_expiry": 1000, "onion_routing_packet": bytes(1366)})
            return
    raise LnemuError(f"{peer} has no open channel with {to}", code="not_found")


def hold(net: Network, peer: str, on: bool = True) -> None:
    """``peer`` holds incoming HTLCs without settling them (jamming)."""
    net.rpc(_peer(net, peer)).call("dev_hold", hold=on)


def withhold_revoke(net: Network, peer: str, on: bool = True) -> None:
    net.rpc(_peer(net, peer)).call("dev_withhold_revoke", withhold=on)


def gossip_flood(net: Network, peer: str, count: int = 200) -> None:
    """``peer`` floods its neighbours with bogus channel_updates."""
    net.rpc(_peer(net, peer)).call("dev_gossip_flood", count=count)


CATALOGUE: dict[str, Callable[..., None]] = {
    "kill": kill, "restart": restart, "pause": pause, "resume": resume, "stop": stop,
    "link": link, "partition": partition, "heal_links": heal_links,
    "pause_mining": pause_mining, "resume_mining": resume_mining, "reorg": reorg,
    "censor": censor, "feespike": feespike, "cheat": cheat, "malformed": malformed,
    "hold": hold, "withhold_revoke": withhold_revoke, "gossip_flood": gossip_flood}

HEALS: dict[str, Callable[[Network, dict[str, Any]], None]] = {
    "kill": lambda net, p: restart(net, p["peer"]),
    "stop": lambda net, p: restart(net, p["peer"]),
    "pause": lambda net, p: resume(net, p["peer"]),
    "link": lambda net, p: heal_links(net),
    "partition": lambda net, p: heal_links(net),
    "pause_mining": lambda net, p: resume_mining(net),
    "hold": lambda net, p: hold(net, p["peer"], False),
    "withhold_revoke": lambda net, p: withhold_revoke(net, p["peer"], False)}


def inject(net: Network, kind: str, **params: Any) -> None:
    """Inject one fault by name; logged as a ``fault`` event."""
    action = CATALOGUE.get(kind)
    if action is None:
        raise BadRequest(f"unknown fault {kind!r}; known: {', '.join(sorted(CATALOGUE))}")
    _emit(net, "fault", fault=kind, **params)
    action(net, **params)


def heal(net: Network, kind: str, **params: Any) -> None:
    """Undo one fault (if it needs undoing); logged as a ``heal`` event."""
    undo = HEALS.get(kind)
    if undo is None:
        return
    _emit(net, "heal", fault=kind, **params)
    undo(net, params)


def heal_everything(net: Network) -> None:
    """Undo every fault that can be undone: resume, restart, heal links, resume mining."""
    for name in net.plans:
        proc = net.process(name)
        if proc.running:
            proc.resume()
    for name in net.plans:
        if not net.process(name).running:
            net.restart(name, died_on_purpose=True)
    heal_links(net)
    for name in net.plans:
        net.rpc(name).call("dev_hold", hold=False)
        net.rpc(name).call("dev_withhold_revoke", withhold=False)
    net.chain.call("resumemining")
    _emit(net, "heal", fault="everything")
