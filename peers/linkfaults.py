"""Link faults, applied in one place: the session layer of each outgoing link.

Per peer (so per direction of a pair) a link can be given delay with jitter (order is
kept), loss (a lost message leaves a gap, which ends the session and forces a
reconnect and ``channel_reestablish``, as a lost TCP connection does), duplication
and reordering (a byzantine transport that the receiver must detect and disconnect
on), and a partition (nothing passes either way until healed). Every random choice
comes from the seed given with the fault.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import BadRequest

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class Fault:
    """The faults on the link towards one peer."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    partitioned: bool = False
    rng: random.Random = field(default_factory=random.Random)
    held: bytes | None = None  # a message waiting to be swapped with the next (reorder)
    queue: asyncio.Queue | None = None
    last_due: float = 0.0
    pending: int = 0  # delayed messages not sent yet (queued, or waiting for their time)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def to_wire(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms, "loss": self.loss,
                "duplicate": self.duplicate, "reorder": self.reorder,
                "partitioned": self.partitioned, "counts": dict(self.counts)}


def _probability(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadRequest(f"{name} must be a probability from 0 to 1, got {value!r}")
    return float(value)


class LinkFaults:
    """The fault table of one peer's links."""

    def __init__(self) -> None:
        self.faults: dict[bytes, Fault] = {}
        # healed faults whose delayed messages are still on their way: what is sent
        # meanwhile queues behind them (else it would overtake them: a session gap)
        self.healing: dict[bytes, Fault] = {}
        self._drainers: set[asyncio.Task] = set()  # held here: the loop keeps weak refs only

    def set(self, peer: bytes, seed: int = 0, delay_ms: float = 0, jitter_ms: float = 0,
            loss: float = 0, duplicate: float = 0, reorder: float = 0,
            partitioned: bool = False) -> Fault:
        """Replace the faults towards ``peer``."""
        if not 0 <= delay_ms <= 60_000 or not 0 <= jitter_ms <= 60_000:
            raise BadRequest("delay_ms and jitter_ms must be from 0 to 60000")
        fault = Fault(float(delay_ms), float(jitter_ms), _probability(loss, "loss"),
                      _probability(duplicate, "duplicate"), _probability(reorder, "reorder"),
                      bool(partitioned), random.Random(f"{seed}:{peer.hex()}"))
        old = self.faults.get(peer) or self.healing.pop(peer, None)
        if old is not None and old.queue is not None:
            fault.queue, fault.last_due, fault.pending = old.queue, old.last_due, old.pending
        self.faults[peer] = fault
        return fault

    def heal(self, peer: bytes | None = None) -> None:
        """Remove the faults towards ``peer`` (every peer when None)."""
        for key in [peer] if peer is not None else list(self.faults):
            fault = self.faults.pop(key, None)
            if fault is not None and fault.pending:  # what is queued still goes, in order
                self.healing[key] = Fault(queue=fault.queue, last_due=fault.last_due,
                                          pending=fault.pending, counts=fault.counts)

    def active(self, peer: bytes) -> bool:
        """Must what goes to ``peer`` pass through here (a fault, or one still draining)?"""
        return peer in self.faults or peer in self.healing

    def blocks(self, peer: bytes) -> bool:
        """True while ``peer`` is partitioned from us (nothing in, nothing out)."""
        fault = self.faults.get(peer)
        return fault is not None and fault.partitioned

    async def transmit(self, peer: bytes, data: bytes, send: Send) -> None:
        """Send ``data`` to ``peer`` through its faults."""
        fault = self.faults.get(peer) or self.healing.get(peer)
        if fault is None:
            await send(data)
            return
        if fault.partitioned or fault.rng.random() < fault.loss:
            fault.count("dropped")
            return
        copies = [data]
        if fault.rng.random() < fault.duplicate:
            fault.count("duplicated")
            copies.append(data)
        if fault.held is None and fault.rng.random() < fault.reorder:
            fault.held = data  # goes out after the next message
            fault.count("reordered")
            return
        if fault.held is not None:
            copies.append(fault.held)
            fault.held = None
        for item in copies:
            await self._delayed(peer, fault, item, send)

    async def _delayed(self, peer: bytes, fault: Fault, data: bytes, send: Send) -> None:
        if fault.delay_ms <= 0 and fault.jitter_ms <= 0 and fault.queue is None:
            await send(data)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + (fault.delay_ms + fault.rng.uniform(0, fault.jitter_ms)) / 1000
        fault.last_due = max(due, fault.last_due)  # order is kept: never before the last
        if fault.queue is None:
            fault.queue = asyncio.Queue()
            task = asyncio.create_task(self._drain(peer, fault.queue, send))
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        fault.count("delayed")
        fault.pending += 1
        await fault.queue.put((fault.last_due, data))

    async def _drain(self, peer: bytes, queue: asyncio.Queue, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await send(data)
            except Exception:  # the link went down meanwhile: the session layer notices
                pass
            fault = self.faults.get(peer) or self.healing.get(peer)
            if fault is not None and fault.queue is queue:
                fault.pending -= 1
                if not fault.pending:
                    self.healing.pop(peer, None)  # all out: sends go direct again
