"""Paying: find routes over our own graph, send attempts, learn from failures, retry.

Each attempt is one HTLC with an onion built for its route; a payment that no single
route can carry is split into parts (MPP) that share the payment hash and secret.
A failure comes back as an error onion that names the failing hop and its BOLT 4
code: mission control remembers the channel (or node) and the next search avoids it,
until a final-hop failure or the attempt budget ends the payment.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from emulator.crypto import sphinx
from emulator.crypto.failures import NODE, PERM, FailureCode
from emulator.errors import LnemuError
from peers.channel import Channel
from peers.channel_state import ChannelState
from peers.htlc_types import Htlc, Side
from peers.mission_control import MissionControl
from peers.onion_payloads import HopPayload
from peers.pathfinding import (
    NoRouteError,
    NoRouteReason,
    Route,
    build_route,
    find_route,
    split_payment,
)

MAX_TRIES = 8
MISSION_SAVE_S = 5.0  # mission control is written at most this often
CLTV_BUFFER = 2
FINAL = {FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, FailureCode.FINAL_INCORRECT_CLTV_EXPIRY,
         FailureCode.FINAL_INCORRECT_HTLC_AMOUNT, FailureCode.INVALID_ONION_PAYLOAD,
         FailureCode.MPP_TIMEOUT}


@dataclass
class Request:
    """What to pay: the payee, the hash, the amount and the final hop's extras."""

    dest: bytes
    payment_hash: bytes
    amount_msat: int
    final_cltv_delta: int
    payment_secret: bytes | None = None
    extra: tuple[tuple[int, bytes], ...] = ()
    hint_edges: tuple = ()
    total_msat: int | None = None  # dev: announce a larger MPP total than we send
    via: tuple[int, int] | None = None  # rebalance: (out scid, in scid), a circle to us


def failure_name(code: int) -> str:
    try:
        return FailureCode(code).name.lower()
    except ValueError:
        return f"code {code:#06x}"


class Payer:
    """Outgoing payments of the node."""

    def __init__(self, node: Any) -> None:
        self.node = node
        stored = node.store.value("mission_control")
        self.mission = MissionControl.from_wire(stored) if stored else MissionControl(
            half_life_s=node.config.timers.ping_interval * 60)
        self.waiting: dict[tuple[bytes, int], asyncio.Future] = {}
        self._save_timer: asyncio.TimerHandle | None = None

    def local_outbound(self) -> dict[int, int]:
        """What we can spend now on each of our open channels (after reserve and fee)."""
        out = {}
        for ch in self.node.channels.channels.values():
            if ch.state != ChannelState.OPEN or ch.short_channel_id is None or \
                    not self.node.links.is_connected(ch.peer_id):
                continue
            out[ch.short_channel_id] = spendable_msat(ch)
        return out

    def routes(self, req: Request) -> list[Route]:
        edges = self.node.gossip.graph.edges() + list(req.hint_edges)
        if req.via is not None:
            return [self._circle(edges, req)]
        return split_payment(
            edges, self.node.node_id, req.dest, req.amount_msat,
            current_height=self.node.height, final_cltv_delta=req.final_cltv_delta,
            cltv_buffer=CLTV_BUFFER, mission=self.mission,
            local_outbound_msat=self.local_outbound(), now=time.time())

    async def run(self, req: Request, deadline: float) -> dict[str, Any]:
        """Try until success, a final failure, no route, or the budget runs out."""
        last = "no attempt made"
        for _ in range(MAX_TRIES):
            if time.time() > deadline:
                break
            try:
                routes = self.routes(req)
            except NoRouteError as exc:
                return {"status": "failed", "failure": f"{exc} ({exc.reason})"}
            if len(routes) == 1:  # no task to make and wait for
                results = [await self._attempt(req, routes[0], deadline)]
            else:
                results = await asyncio.gather(*(self._attempt(req, r, deadline)
                                                 for r in routes))
            won = [r for r in results if r.get("preimage")]
            if won:
                return {"status": "succeeded", "preimage": won[0]["preimage"],
                        "fee_msat": sum(r.fee_msat for r in routes), "parts": len(routes),
                        "route": [h.node_id for h in routes[0]]}
            last = "; ".join(r["failure"] for r in results if r.get("failure"))
            if any(r.get("final") for r in results):
                return {"status": "failed", "failure": last}
        return {"status": "failed", "failure": f"gave up: {last}"}

    def _circle(self, edges: list, req: Request) -> Route:
        """A circular route for rebalancing: out over one of our channels, around the
        network, back in over another (mission control steers the middle part)."""
        me = self.node.node_id
        out_scid, in_scid = req.via
        first = [e for e in edges if e.short_channel_id == out_scid and e.source == me]
        last = [e for e in edges if e.short_channel_id == in_scid and e.dest == me]
        if not first or not last:
            raise NoRouteError(NoRouteReason.NO_PATH, "both channels must be ours, open and "
                               "known with both directions' policies")
        spend = self.local_outbound().get(out_scid, 0)
        if spend < req.amount_msat:
            raise NoRouteError(NoRouteReason.LOCAL_BALANCE, f"the out channel can spend "
                               f"{spend} msat, less than {req.amount_msat}")
        middle_edges = [e for e in edges if me not in (e.source, e.dest)]
        source, target = first[0].dest, last[0].source
        middle: list = []
        if source != target:
            hops = find_route(middle_edges, source, target, req.amount_msat,
                              current_height=self.node.height, final_cltv_delta=0,
                              mission=self.mission, now=time.time())
            by_scid = {(e.short_channel_id, e.dest): e for e in middle_edges}
            middle = [by_scid[(h.short_channel_id, h.node_id)] for h in hops]
        return build_route([first[0], *middle, last[0]], req.amount_msat,
                           current_height=self.node.height,
                           final_cltv_delta=req.final_cltv_delta, cltv_buffer=CLTV_BUFFER)

    async def _attempt(self, req: Request, route: Route, deadline: float) -> dict[str, Any]:
        ch = self._channel(route[0].short_channel_id)
        if ch is None:
            return {"failure": "our first channel is gone"}
        session_key = os.urandom(32)
        onion = sphinx.build_onion(session_key, self._hops(req, route), req.payment_hash)
        self.node.payments.add_attempt(req.payment_hash, {
            "session_key": session_key, "route": [h.node_id for h in route],
            "scids": [h.short_channel_id for h in route],
            "amounts": [h.amount_msat for h in route], "channel_id": ch.cid})
        try:
            htlc = await self.node.channels.add_htlc(ch, route[0].amount_msat, req.payment_hash,
                                                     route[0].cltv_expiry, onion)
        except LnemuError as exc:
            self.mission.record_failure(route[0].short_channel_id, self.node.node_id,
                                        route[0].node_id, route[0].amount_msat, time.time())
            return {"failure": f"first hop refused: {exc}"}
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting[(ch.cid, htlc.htlc_id)] = future
        timer = loop.call_later(max(1.0, deadline - time.time()),
                                lambda: future.done() or future.set_result({"timeout": True}))
        try:
            outcome = await future
        finally:
            timer.cancel()
            self.waiting.pop((ch.cid, htlc.htlc_id), None)
        if "timeout" in outcome:
            return {"failure": "no outcome in time (the HTLC is still in flight)",
                    "final": True}
        if "preimage" in outcome:
            self._learn_success(route)
            return outcome
        return self._learn_failure(route, outcome, session_key)

    def _hops(self, req: Request, route: Route) -> list[tuple[bytes, bytes]]:
        hops = []
        for hop, nxt in zip(route, route[1:], strict=False):
            payload = HopPayload(nxt.amount_msat, nxt.cltv_expiry, nxt.short_channel_id)
            hops.append((hop.node_id, payload.encode()))
        last = route[-1]
        final = HopPayload(last.amount_msat, last.cltv_expiry, None, req.payment_secret,
                           (req.total_msat or req.amount_msat) if req.payment_secret else None,
                           req.extra)
        hops.append((last.node_id, final.encode()))
        return hops

    def _channel(self, scid: int) -> Channel | None:
        for ch in self.node.channels.channels.values():
            if ch.short_channel_id == scid and ch.state == ChannelState.OPEN:
                return ch
        return None

    def _learn_success(self, route: Route) -> None:
        now = time.time()
        prev = self.node.node_id
        for hop in route:
            self.mission.record_success(hop.short_channel_id, prev, hop.node_id,
                                        hop.amount_msat, now)
            prev = hop.node_id
        self._save()

    def _learn_failure(self, route: Route, outcome: dict[str, Any],
                       session_key: bytes) -> dict[str, Any]:
        now = time.time()
        if "malformed_code" in outcome:
            self.mission.record_node_failure(route[0].node_id, now)
            self._save()
            return {"failure": f"hop 0 could not parse the onion "
                               f"({failure_name(outcome['malformed_code'])})"}
        try:
            index, message = sphinx.decode_error(session_key, [h.node_id for h in route],
                                                 outcome["reason"])
        except LnemuError as exc:
            return {"failure": f"undecodable failure: {exc}"}
        code = int.from_bytes(message[:2], "big")
        text = f"hop {index} ({route[index].node_id.hex()[:16]}) failed: {failure_name(code)}"
        if index == len(route) - 1:
            return {"failure": text, "final": code in FINAL or bool(code & PERM)}
        nxt = route[index + 1]
        if code & NODE:
            self.mission.record_node_failure(route[index].node_id, now)
        else:
            self.mission.record_failure(nxt.short_channel_id, route[index].node_id,
                                        nxt.node_id, nxt.amount_msat, now)
        self._save()
        return {"failure": text}

    def _save(self) -> None:
        """Mission control is written at most every MISSION_SAVE_S (and at a clean stop):
        it is a memory of what worked, not money; a crash forgets a few seconds of it."""
        if self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(
                MISSION_SAVE_S, self.persist)

    def persist(self) -> None:
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        self.node.store.set_value("mission_control", self.mission.to_wire())

    # --- outcomes from the channel manager ---------------------------------------------
    def resolve(self, ch: Channel, htlc: Htlc, outcome: dict[str, Any]) -> bool:
        """Hand an HTLC's outcome to the attempt waiting for it; False if none waits."""
        future = self.waiting.get((ch.cid, htlc.htlc_id))
        if future is None or future.done():
            return False
        future.set_result(outcome)
        return True


def spendable_msat(ch: Channel) -> int:
    """What we can offer on ``ch`` now: our balance on their next commitment, less
    what is pending, their reserve, and (as opener) the fee of one more HTLC."""
    from peers import commitment as cm
    led = ch.ledger
    ctn = led.ctn_latest(Side.REMOTE)
    pending = sum(h.amount_msat for s, h in led.htlcs_pending(Side.REMOTE) if s == Side.LOCAL)
    htlcs = len(led.htlcs(Side.REMOTE, ctn)) + 1
    fee_msat = 1000 * cm.commitment_fee_sat(led.feerate(Side.REMOTE, ctn), htlcs) \
        if ch.local_is_opener else 0
    reserve_msat = 1000 * ch.remote.channel_reserve_sat
    return max(0, led.balance_msat(Side.LOCAL, Side.REMOTE, ctn) - pending - fee_msat
               - reserve_msat)
