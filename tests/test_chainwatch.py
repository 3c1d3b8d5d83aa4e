"""The chain follower (peers/chainwatch.py): blocks in order, reorgs replayed, and a
chain height that never shows the replay."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import zmq.asyncio

from emulator import transport
from emulator.rpc import RpcTimeout
from peers.chainwatch import ChainFollower


@pytest.fixture
def feed() -> Iterator[str]:
    """The block feed's endpoint, in a fresh short directory (nobody publishes on it)."""
    sock_dir = transport.short_socket_dir("lnemu-chainwatch-")
    try:
        yield transport.ipc_endpoint(sock_dir, "blocks")
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def chain_of(length: int, fork_from: int = -1, branch: bytes = b"") -> list[dict[str, Any]]:
    """Blocks 0..length-1; from ``fork_from`` on their hashes also hash ``branch``."""
    blocks: list[dict[str, Any]] = []
    prev = bytes(32)
    for height in range(length):
        salt = branch if 0 <= fork_from <= height else b""
        block_hash = hashlib.sha256(prev + height.to_bytes(4, "big") + salt).digest()
        blocks.append({"height": height, "hash": block_hash, "prev_hash": prev, "txs": []})
        prev = block_hash
    return blocks


class FakeChain:
    """The chain's RPC as the follower uses it: getheight and getblock; ``down``, it
    answers nothing."""

    def __init__(self, blocks: list[dict[str, Any]]) -> None:
        self.blocks = blocks
        self.asked = 0  # getheight calls
        self.down = False

    async def call(self, op: str, **args: Any) -> Any:
        if self.down:
            raise RpcTimeout("no reply from the chain")
        if op == "getheight":
            self.asked += 1
            return len(self.blocks) - 1
        assert op == "getblock"
        return self.blocks[args["height"]]


def test_the_chain_height_does_not_fall_back_while_a_reorg_is_replayed(feed):
    """While a reorg replays from genesis, ``height`` climbs from 0 again but ``tip``
    stays the chain's height, which is what every CLTV decision of the peer uses."""
    async def scenario() -> tuple[list[tuple[int, int, int]], int, int, list[int]]:
        chain = FakeChain(chain_of(11))
        seen: list[tuple[int, int, int]] = []
        reorgs: list[int] = []

        async def on_block(height: int, block_hash: bytes, txs: list) -> None:
            seen.append((height, follower.height, follower.tip))

        async def on_reorg(height: int) -> None:
            reorgs.append(height)

        ctx = zmq.asyncio.Context()
        follower = ChainFollower(ctx, chain, feed, 1.0,
                                 logging.getLogger("test"), on_block, on_reorg)
        try:
            await follower.catch_up()
            assert (follower.height, follower.tip) == (10, 10)
            seen.clear()
            chain.blocks = chain_of(12, fork_from=9, branch=b"other")  # depth 2, one more
            await follower.catch_up()
        finally:
            follower.close()
            ctx.term()
        return seen, follower.height, follower.tip, reorgs

    seen, height, tip, reorgs = asyncio.run(scenario())
    assert reorgs == [-1]
    assert [h for h, _, _ in seen] == list(range(12))  # replayed from genesis, in order
    assert all(delivered == h for h, delivered, _ in seen)
    assert {t for _, _, t in seen} == {11}  # never the replayed block's height
    assert (height, tip) == (11, 11)


def test_the_tip_is_the_chains_height_while_catching_up(feed):
    """Catching up after a pause: the chain's height is known before its blocks are."""
    async def scenario() -> list[int]:
        chain = FakeChain(chain_of(3))
        tips: list[int] = []

        async def on_block(height: int, block_hash: bytes, txs: list) -> None:
            tips.append(follower.tip)

        async def on_reorg(height: int) -> None:
            raise AssertionError("no reorg here")

        ctx = zmq.asyncio.Context()
        follower = ChainFollower(ctx, chain, feed, 1.0,
                                 logging.getLogger("test"), on_block, on_reorg)
        try:
            await follower.catch_up()
            tips.clear()
            chain.blocks = chain_of(8)
            await follower.catch_up()
        finally:
            follower.close()
            ctx.term()
        return tips

    assert asyncio.run(scenario()) == [7, 7, 7, 7, 7]  # blocks 3..7, each seen at tip 7


async def _no_block(height: int, block_hash: bytes, txs: list) -> None:
    pass


async def _no_reorg(height: int) -> None:
    raise AssertionError("no reorg here")


def test_after_a_pause_the_chain_is_asked_for_its_height_once(feed):
    """``fresh_tip`` trusts the view while the feed keeps it current; after a pause it
    asks the chain once (blocks may have come that no feed message told of)."""
    async def scenario() -> tuple[list[int], int]:
        chain = FakeChain(chain_of(5))
        ctx = zmq.asyncio.Context()
        follower = ChainFollower(ctx, chain, feed, 1.0, logging.getLogger("test"),
                                 _no_block, _no_reorg)
        try:
            await follower.catch_up()  # asks once: the view is fresh
            chain.blocks = chain_of(9)  # four blocks we have not heard of
            seen = [await follower.fresh_tip()]
            follower.mark_stale()  # SIGSTOP, SIGCONT
            seen += [await follower.fresh_tip(), await follower.fresh_tip(), follower.height]
        finally:
            follower.close()
            ctx.term()
        return seen, chain.asked

    seen, asked = asyncio.run(scenario())
    assert seen == [4, 8, 8, 4]  # the chain's 8, before its blocks arrive
    assert asked == 2  # at the catch-up, and once after the pause


def test_an_unreachable_chain_leaves_the_view_stale_and_is_asked_again(feed):
    """If the chain does not answer, the decision is made on our view, and the chain is
    asked again next time."""
    async def scenario() -> list[int]:
        chain = FakeChain(chain_of(5))
        ctx = zmq.asyncio.Context()
        follower = ChainFollower(ctx, chain, feed, 1.0, logging.getLogger("test"),
                                 _no_block, _no_reorg)
        try:
            await follower.catch_up()
            follower.mark_stale()
            chain.blocks, chain.down = chain_of(7), True
            seen = [await follower.fresh_tip()]
            chain.down = False
            seen.append(await follower.fresh_tip())
        finally:
            follower.close()
            ctx.term()
        return seen

    assert asyncio.run(scenario()) == [4, 6]
