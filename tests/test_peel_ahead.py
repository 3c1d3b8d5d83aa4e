"""An incoming HTLC's onion is peeled while the HTLC is being committed, and the layer
peeled then is the one its forwarder or payee gets once the HTLC is irrevocable; an onion
that does not peel is left for then, and failed back as malformed."""
from __future__ import annotations

import asyncio
import hashlib
import os
from types import SimpleNamespace

from coincurve import PrivateKey

from emulator.crypto import sphinx
from peers import payments as payments_mod
from peers.htlc_types import Htlc
from peers.onion_payloads import HopPayload
from peers.payments import Payments

NODE_SECRET = bytes(range(1, 33))
NEXT_SECRET = bytes(range(2, 34))


class _Recorder:
    """Stands in for the forwarder, the payee and the channels: records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def forward(self, ch, htlc, payload, peeled) -> None:
        self.calls.append(("forward", htlc.htlc_id, payload.amt_to_forward, peeled))

    async def on_final_htlc(self, ch, htlc, payload, shared_secret) -> None:
        self.calls.append(("final", htlc.htlc_id, payload.amt_to_forward, shared_secret))

    async def fail_malformed(self, ch, htlc, exc) -> None:
        self.calls.append(("malformed", htlc.htlc_id, exc.failure_code))

    def revealed(self, ch, payment_hash):
        return None


def _payments() -> tuple[Payments, _Recorder]:
    rec = _Recorder()
    node = SimpleNamespace(store=None, node_secret=NODE_SECRET, channels=rec, forwarder=rec,
                           receiver=rec)
    return Payments(node), rec


def _htlc(htlc_id: int, forwarded: bool) -> Htlc:
    payment_hash = hashlib.sha256(os.urandom(32)).digest()
    ours = PrivateKey(NODE_SECRET).public_key.format()
    if forwarded:  # we forward 5000 msat over channel 7 to the next node
        hops = [(ours, HopPayload(5000, 600, 7).encode()),
                (PrivateKey(NEXT_SECRET).public_key.format(), HopPayload(5000, 600).encode())]
    else:
        hops = [(ours, HopPayload(5000, 600).encode())]
    onion = sphinx.build_onion(os.urandom(32), hops, payment_hash)
    return Htlc(htlc_id, 6000, payment_hash, 700, onion)


def test_the_layer_peeled_ahead_is_the_one_handed_on_once():
    payments, rec = _payments()
    forwarded, final = _htlc(0, forwarded=True), _htlc(1, forwarded=False)
    for htlc in (forwarded, final):
        payments.peel_ahead(htlc)
        payments.peel_ahead(htlc)  # shown again at the next round: peeled once
    assert len(payments._peeled) == 2
    asyncio.run(payments.on_incoming_htlc(None, forwarded))
    asyncio.run(payments.on_incoming_htlc(None, final))
    expected = sphinx.peel_onion(forwarded.onion, NODE_SECRET, forwarded.payment_hash)
    assert rec.calls[0] == ("forward", 0, 5000, expected)
    assert rec.calls[1] == ("final", 1, 5000, sphinx.peel_onion(
        final.onion, NODE_SECRET, final.payment_hash).shared_secret)
    assert payments._peeled == {}  # used up: nothing kept past its HTLC


def test_an_onion_peeled_only_at_its_turn_gives_the_same_layer():
    ahead, rec_ahead = _payments()
    late, rec_late = _payments()
    htlc = _htlc(0, forwarded=True)
    ahead.peel_ahead(htlc)
    asyncio.run(ahead.on_incoming_htlc(None, htlc))
    asyncio.run(late.on_incoming_htlc(None, htlc))  # after a restart, say: nothing ahead
    assert rec_ahead.calls == rec_late.calls


def test_an_onion_that_does_not_peel_is_failed_back_at_its_turn():
    payments, rec = _payments()
    good = _htlc(0, forwarded=False)
    tampered = Htlc(0, good.amount_msat, good.payment_hash, good.cltv_expiry,
                    good.onion[:-1] + bytes([good.onion[-1] ^ 1]))
    payments.peel_ahead(tampered)
    assert payments._peeled == {}
    asyncio.run(payments.on_incoming_htlc(None, tampered))
    assert rec.calls == [("malformed", 0, sphinx.FailureCode.INVALID_ONION_HMAC)]


def test_onions_of_htlcs_that_never_became_irrevocable_are_not_kept_forever(monkeypatch):
    monkeypatch.setattr(payments_mod, "PEELED_AHEAD_MAX", 3)
    payments, _ = _payments()
    htlcs = [_htlc(i, forwarded=False) for i in range(5)]
    for htlc in htlcs:
        payments.peel_ahead(htlc)
    assert [h for h, _ in payments._peeled] == [h.payment_hash for h in htlcs[2:]]
