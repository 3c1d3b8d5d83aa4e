"""Follows the chain: block feed (SUB) plus catch-up by height over the chain's RPC.

PUB/SUB may drop messages, and a peer may start late or be paused, so the feed
only says "there is a block at height h"; the follower then fetches every block it
has not seen, in order, and hands each to its listeners. A block whose parent is
not our tip means a reorg: the follower resets its listeners and replays.

Two heights: ``height`` is the last block delivered, which falls back to -1 when a
reorg starts the replay and climbs again block by block; ``tip`` is the chain's height
as last asked, and never shows the replay: an HTLC's expiry, a route's CLTV or a
payee's final CLTV check made while a reorg is replayed is made against the chain as
it is (a payee that took the replay's height for the chain's could accept an HTLC
that had already expired, and hand over its preimage for nothing).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import zmq.asyncio

from emulator import envelope, transport
from emulator.errors import LnemuError
from emulator.rpc import AsyncRpcClient, RpcError, RpcTimeout
from emulator.tx import Tx

BlockListener = Callable[[int, bytes, list[Tx]], Awaitable[None]]
ReorgListener = Callable[[int], Awaitable[None]]


class ChainFollower:
    """Delivers every block once, in order, to ``on_block``."""

    def __init__(self, ctx: zmq.asyncio.Context, chain: AsyncRpcClient, feed: str,
                 poll_seconds: float, log: logging.Logger, on_block: BlockListener,
                 on_reorg: ReorgListener) -> None:
        self.chain = chain
        self.sub = transport.subscriber(ctx, feed)
        self.poll_seconds = poll_seconds
        self.log = log
        self.on_block = on_block
        self.on_reorg = on_reorg
        self.hashes: list[bytes] = []  # our view: hash by height
        self._chain_height = -1  # the chain's, as last asked
        self._stale = True  # the chain not asked since a start or a pause
        self._lock = asyncio.Lock()

    @property
    def height(self) -> int:
        """The height of the last block delivered to the listeners."""
        return len(self.hashes) - 1

    @property
    def tip(self) -> int:
        """The chain's height as we know it: our last block, or the chain's tip as last
        asked if that is higher (while we catch up, or replay after a reorg)."""
        return max(len(self.hashes) - 1, self._chain_height)

    def mark_stale(self) -> None:
        """We were paused: blocks may have come that neither view has seen."""
        self._stale = True

    async def fresh_tip(self) -> int:
        """``tip`` for a decision a lagging view must not make (an HTLC's expiry): after
        a start or a pause, the chain is asked once first (if it answers)."""
        if self._stale:
            try:
                self._chain_height = await self.chain.call("getheight")
                self._stale = False
            except LnemuError as exc:  # as unreachable as it gets: decide on our view
                self.log.warning("chain unreachable for its height: %s", exc)
        return self.tip

    async def run(self) -> None:
        """Catch up, then follow the feed; poll now and then in case it dropped one."""
        await self.catch_up()
        while True:
            if await self.sub.poll(int(self.poll_seconds * 1000)):
                data = await self.sub.recv()
                try:
                    envelope.unpack(data, max_bytes=envelope.CONTROL_MAX_BYTES)
                except envelope.EnvelopeError as exc:
                    self.log.warning("block feed: bad message: %s", exc)
                    continue
            await self.catch_up()

    async def catch_up(self) -> None:
        """Fetch and deliver every block up to the chain's tip."""
        async with self._lock:
            try:
                tip = self._chain_height = await self.chain.call("getheight")
                self._stale = False
                while self.height < tip:
                    block = await self.chain.call("getblock", height=self.height + 1)
                    if self.hashes and block["prev_hash"] != self.hashes[-1]:
                        await self._rewind()
                        continue
                    self.hashes.append(block["hash"])
                    txs = [Tx.from_wire(t) for t in block["txs"]]
                    await self.on_block(block["height"], block["hash"], txs)
            except (RpcError, RpcTimeout) as exc:
                self.log.warning("chain unreachable while catching up: %s", exc)

    async def _rewind(self) -> None:
        """A reorg: forget our view and replay from genesis (listeners reset first)."""
        self.log.warning("reorg below height %d: replaying the chain", self.height)
        self.hashes.clear()
        await self.on_reorg(-1)

    def close(self) -> None:
        self.sub.close(linger=0)
