"""The forwarder's view of the chain's height: its own (kept current by the block feed),
except after a start or a pause, when it asks the chain once before trusting it."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from emulator.errors import LnemuError
from peers.forwarding import Forwarder


class _Store:
    def items(self, table):
        return []

    def value(self, key, default=None):
        return default


class _Chain:
    def __init__(self, tip: int) -> None:
        self.tip, self.asked, self.down = tip, 0, False

    async def call(self, op: str):
        assert op == "getheight"
        self.asked += 1
        if self.down:
            raise LnemuError("chain unreachable")
        return self.tip


def _forwarder(view: int, tip: int) -> tuple[Forwarder, _Chain, SimpleNamespace]:
    chain = _Chain(tip)
    node = SimpleNamespace(store=_Store(), chain=chain, height=view)
    return Forwarder(node), chain, node


def test_the_chain_is_asked_once_after_a_start_and_after_each_pause():
    fwd, chain, node = _forwarder(view=100, tip=105)

    async def heights() -> list[int]:
        seen = [await fwd._chain_height(), await fwd._chain_height()]
        node.height = 106  # the feed moved our view on
        seen.append(await fwd._chain_height())
        fwd.resumed()  # SIGCONT: blocks may have come while we were frozen
        chain.tip = 110
        seen += [await fwd._chain_height(), await fwd._chain_height()]
        return seen

    assert asyncio.run(heights()) == [105, 105, 106, 110, 110]
    assert chain.asked == 2


def test_an_unreachable_chain_leaves_the_view_stale_and_asked_again():
    fwd, chain, node = _forwarder(view=100, tip=104)
    chain.down = True

    async def heights() -> list[int]:
        seen = [await fwd._chain_height()]
        chain.down = False
        seen.append(await fwd._chain_height())
        return seen

    assert asyncio.run(heights()) == [100, 104]
    assert chain.asked == 2
