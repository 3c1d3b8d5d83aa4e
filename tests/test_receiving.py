"""The payee's checks of an HTLC that ends here (peers/receiving.py), on a fake node:
the chain's height as the node asks it, and the CLTV checks keysend shares."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import types
from typing import Any

import pytest

from emulator.crypto import tlv
from emulator.crypto.failures import FailureCode
from peers.config import Timers
from peers.htlc_types import Htlc
from peers.onion_payloads import HopPayload
from peers.receiving import Receiver
from peers.store import Store

MIN_FINAL = Timers.profile("test").min_final_cltv_expiry_delta
CHANNEL = types.SimpleNamespace(cid=bytes(32))
PREIMAGE = bytes(range(32))


class FakeNode:
    """What the receiver uses of a node: the store, timers, the chain's height (asked,
    not the view), events, and the channel verbs it settles or fails with."""

    def __init__(self, store: Store, chain_height: int) -> None:
        self.store = store
        self.config = types.SimpleNamespace(timers=Timers.profile("test"))
        self.height = 0  # a lagging view: the receiver must not use it
        self._chain_height = chain_height
        self.events = types.SimpleNamespace(emit=lambda kind, **data: None)
        self.log = logging.getLogger("test")
        self.fulfilled: list[bytes] = []
        self.failed: list[Any] = []
        self.channels = types.SimpleNamespace(fulfill_htlc=self._fulfill, fail_htlc=self._fail)

    async def chain_height(self) -> int:
        return self._chain_height

    async def _fulfill(self, ch: Any, htlc: Htlc, preimage: bytes) -> None:
        self.fulfilled.append(preimage)

    async def _fail(self, ch: Any, htlc: Htlc, reason: bytes) -> None:
        self.failed.append(reason)


@pytest.fixture
def node(tmp_path) -> FakeNode:
    store = Store(tmp_path / "peer.sqlite")
    yield FakeNode(store, chain_height=100)
    store.close()


def keysend(node: FakeNode, cltv_expiry: int, outgoing_cltv: int | None = None) -> None:
    htlc = Htlc(0, 5_000, hashlib.sha256(PREIMAGE).digest(), cltv_expiry)
    payload = HopPayload(5_000, cltv_expiry if outgoing_cltv is None else outgoing_cltv,
                         extra=((tlv.KEYSEND_PREIMAGE, PREIMAGE),))
    receiver = Receiver(node)
    failures: list[bytes] = []

    async def fail(ch: Any, htlc: Htlc, secret: bytes, message: bytes) -> None:
        failures.append(message)
    receiver._fail = fail  # the failure message itself, before it is wrapped in the onion
    asyncio.run(receiver.on_final_htlc(CHANNEL, htlc, payload, bytes(32)))
    node.failed.extend(failures)


def code(message: bytes) -> int:
    return int.from_bytes(message[:2], "big")


def test_a_keysend_with_room_before_its_expiry_is_settled(node):
    keysend(node, cltv_expiry=100 + MIN_FINAL)
    assert node.fulfilled == [PREIMAGE] and node.failed == []
    assert node.store.get("invoices", hashlib.sha256(PREIMAGE).digest())["keysend"]


def test_a_keysend_too_close_to_its_expiry_is_failed_not_settled(node):
    """Against the chain's height (100), not the lagging view (0): settled, the payer
    could time it out on chain before we claim it."""
    keysend(node, cltv_expiry=100 + MIN_FINAL - 1)
    assert node.fulfilled == []
    assert [code(m) for m in node.failed] == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]
    assert node.failed[0][-4:] == (100).to_bytes(4, "big")  # the height the payer is told
    assert node.store.get("invoices", hashlib.sha256(PREIMAGE).digest()) is None


def test_a_keysend_whose_expiry_is_not_the_onions_is_failed(node):
    keysend(node, cltv_expiry=200, outgoing_cltv=201)
    assert node.fulfilled == []
    assert [code(m) for m in node.failed] == [FailureCode.FINAL_INCORRECT_CLTV_EXPIRY]
