"""Scenario actions: what each ``[[events]]`` entry does to a running network.

Every action calls the control RPC of the processes involved and waits until it
has taken effect. Payments are recorded (label, who, how much, when) so that the
runner can fetch their outcomes and the report can show them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import LnemuError
from emulator.network import Network
from emulator.waiting import wait_for


@dataclass
class Sent:
    """A payment the scenario started; its outcome is read from the payer at the end."""

    index: int
    label: str
    kind: str
    source: str
    dest: str
    amount_msat: int
    at: float
    expect: str = "any"  # what the scenario said: succeeded, failed or any
    payment_hash: bytes | None = None
    error: str | None = None  # refused before any HTLC left (no route, bad input)
    text: str | None = None
    bolt11: str | None = None  # the invoice paid (kind "invoice")


@dataclass
class Actions:
    """Plays actions on ``net``; ``started`` is the run's start time (monotonic)."""

    net: Network
    started: float
    sent: list[Sent] = field(default_factory=list)
    chain_fees_sat: dict[str, int] = field(default_factory=dict)

    def play(self, event: dict[str, Any]) -> None:
        """Carry out one scenario event."""
        handler = getattr(self, f"do_{event['action']}")
        handler(event)

    def do_fault(self, event: dict[str, Any]) -> None:
        """Inject a fault of the catalogue (logged as a ``fault`` event)."""
        from emulator import faults
        params = {k: v for k, v in event.items() if k not in ("action", "label", "at", "fault")}
        faults.inject(self.net, event["fault"], **params)

    def do_heal(self, event: dict[str, Any]) -> None:
        """Undo a fault (``fault = "everything"``: every fault there is)."""
        from emulator import faults
        if event["fault"] == "everything":
            faults.heal_everything(self.net)
        else:
            params = {k: v for k, v in event.items() if k in ("peer",)}
            faults.heal(self.net, event["fault"], **params)

    def do_mine(self, event: dict[str, Any]) -> None:
        self.net.chain.call("mine", n=event.get("blocks", 1))

    def do_wait(self, event: dict[str, Any]) -> None:
        time.sleep(event.get("seconds", 0))  # emulated time passes; blocks keep coming

    def do_sendonchain(self, event: dict[str, Any]) -> None:
        args = {"address": self.net.wallet_key(event["to"]), "amount_sat": event["amount_sat"]}
        if "feerate_sat_per_kb" in event:
            args["feerate_sat_per_kb"] = event["feerate_sat_per_kb"]
        sent = self.net.rpc(event["from"]).call("sendonchain", **args)
        self.chain_fees_sat[event["from"]] = self.chain_fees_sat.get(event["from"], 0) + \
            sent["fee_sat"]
        self._confirm(sent["txid"])

    def _confirm(self, txid: bytes) -> None:
        def confirmed() -> bool:
            if self.net.block_interval == 0:
                self.net.chain.call("mine", n=1)
            return self.net.chain.call("gettx", txid=txid)["status"] == "confirmed"
        wait_for(confirmed, 60, what=f"transaction {txid.hex()} confirmed")

    # --- payments -------------------------------------------------------------------
    def start_payment(self, kind: str, source: str, dest: str, amount_msat: int,
                      label: str = "", expect: str = "any", text: str | None = None,
                      ) -> Sent:
        """Start a payment without waiting for its outcome. ``expect`` is what the
        scenario's event said ("any" for traffic, whose success rate is what counts)."""
        record = Sent(len(self.sent), label or f"p{len(self.sent)}", kind, source, dest,
                      amount_msat, time.monotonic() - self.started, expect, text=text)
        self.sent.append(record)
        try:
            if kind == "invoice":
                inv = self.net.rpc(dest).call("invoice", amount_msat=amount_msat,
                                              description=record.label)
                record.bolt11 = inv["bolt11"]
                res = self.net.rpc(source).call("pay", bolt11=inv["bolt11"], wait=False)
            elif kind == "keysend":
                res = self.net.rpc(source).call("keysend", node_id=self.net.node_id(dest),
                                                amount_msat=amount_msat, wait=False)
            else:
                res = self.net.rpc(source).call("sendmessage", node_id=self.net.node_id(dest),
                                                text=text or "", amount_msat=amount_msat,
                                                wait=False)
            record.payment_hash = res["payment_hash"]
        except LnemuError as exc:
            record.error = str(exc)
        return record

    def do_pay(self, event: dict[str, Any]) -> None:
        self._pay_and_wait("invoice", event)

    def do_keysend(self, event: dict[str, Any]) -> None:
        self._pay_and_wait("keysend", event)

    def do_message(self, event: dict[str, Any]) -> None:
        event = {"amount_msat": 1000, **event}
        self._pay_and_wait("message", event)

    def _pay_and_wait(self, kind: str, event: dict[str, Any]) -> None:
        """Start the payment and wait for its outcome, unless ``expect = "any"``: such a
        payment may stay in flight (a held HTLC, a force close), so the scenario moves
        on at once and the runner waits for it while settling."""
        expect = event.get("expect", "succeeded")
        record = self.start_payment(kind, event["from"], event["to"], event["amount_msat"],
                                    event.get("label", ""), expect, event.get("text"))
        if record.payment_hash is not None and expect != "any":
            wait_for(lambda: self.outcome(record)["status"] != "pending", 60,
                     what=f"payment {record.label} finished")

    def outcome(self, record: Sent) -> dict[str, Any]:
        """The payer's record of a payment (status, fee, failure, timing)."""
        if record.payment_hash is None:
            return {"status": "failed", "failure": record.error}
        for p in self.net.rpc(record.source).call("listpayments"):
            if p["payment_hash"] == record.payment_hash:
                return p
        return {"status": "failed", "failure": "the payer has no record of it"}

    # --- channels -------------------------------------------------------------------------
    def do_open_channel(self, event: dict[str, Any]) -> None:
        """Open the channel, then wait until every peer's graph can route over it."""
        [channel_id] = open_channels(self.net, [(event["from"], event["to"],
                                                 event["capacity_sat"],
                                                 event.get("push_msat", 0))])
        scid = next(ch["short_channel_id"] for ch in self.net.rpc(event["from"]).call(
            "listchannels") if ch["channel_id"] == channel_id)
        label = f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"  # BOLT 7 form

        def routable(name: str) -> bool:
            return any(c["short_channel_id"] == label and c.get("policy_1") and
                       c.get("policy_2") for c in self.net.rpc(name).call("listgraph")["channels"])
        # peers with no link at all cannot hear gossip: they are not waited for
        linked = [n for n in self.net.plans
                  if any(p["connected"] for p in self.net.rpc(n).call("listpeers"))]
        wait_for(lambda: all(routable(n) for n in linked), 30,
                 what=f"channel {label} announced to every linked peer")

    def channel_between(self, a: str, b: str) -> dict[str, Any]:
        for ch in self.net.rpc(a).call("listchannels"):
            if ch["peer_id"] == self.net.node_id(b) and ch["state"] not in ("CLOSED",):
                return ch
        raise LnemuError(f"no channel between {a} and {b}", code="not_found")

    def do_close_channel(self, event: dict[str, Any]) -> None:
        ch = self.channel_between(event["from"], event["to"])
        self.net.rpc(event["from"]).call("close", channel_id=ch["channel_id"],
                                         force=event.get("force", False))

    def do_cheat(self, event: dict[str, Any]) -> None:
        ch = self.channel_between(event["from"], event["to"])
        back = event.get("states_back", 1)  # 1: the latest revoked commitment
        self.net.rpc(event["from"]).call("cheat", channel_id=ch["channel_id"],
                                         commitment_number=ch["commitment_number"] - back)

    def do_hold(self, event: dict[str, Any]) -> None:
        self.net.rpc(event["peer"]).call("dev_hold", hold=event.get("on", True))


OPEN_RETRIES = 3  # a link that drops during an opening (a missed pong under load) is retried


def open_channels(net: Network, specs: list[tuple],
                  timeout: float = 60.0) -> list[bytes]:
    """Open channels (opener, acceptor, capacity_sat, push_msat[, private]) and mine
    until every one is open on both ends. A private channel is not announced."""
    ids = []
    for a, b, capacity, push, *rest in specs:
        private = bool(rest and rest[0])
        res = _fundchannel(net, a, b, capacity, push, announce=not private)
        ids.append((a, b, res["channel_id"]))

    def all_open() -> bool:
        if net.block_interval == 0:
            net.chain.call("mine", n=1)
        states = {(n, ch["channel_id"]): ch["state"] for n in {x for s in ids for x in s[:2]}
                  for ch in net.rpc(n).call("listchannels")}
        return all(states.get((a, cid)) == "OPEN" and states.get((b, cid)) == "OPEN"
                   for a, b, cid in ids)
    wait_for(all_open, timeout, what=f"{len(ids)} channel(s) open")
    return [cid for _, _, cid in ids]


def _fundchannel(net: Network, a: str, b: str, capacity_sat: int, push_msat: int,
                 announce: bool) -> dict[str, Any]:
    """``fundchannel``, retried when the link dropped before the funding was signed (the
    peer abandons such an opening and frees its coins, so nothing is left half-open)."""
    attempt = 1
    while True:
        try:
            return net.rpc(a).call("fundchannel", node_id=net.node_id(b),
                                   amount_sat=capacity_sat, push_msat=push_msat,
                                   announce=announce, reply_timeout=30)
        except LnemuError as exc:
            if attempt >= OPEN_RETRIES or "disconnected during the opening" not in str(exc):
                raise
        attempt += 1
        wait_for(lambda: _linked(net, a, b), 30, what=f"{a} and {b} connected again")


def _linked(net: Network, a: str, b: str) -> bool:
    peer = {p["node_id"]: p for p in net.rpc(a).call("listpeers")}.get(net.node_id(b))
    return bool(peer and peer["connected"])
