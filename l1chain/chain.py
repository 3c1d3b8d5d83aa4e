"""Chain state and decisions: ledger, mempool, miner and fault hooks. No sockets.

Everything the chain process decides happens here, synchronously, so that the same
code runs in the process (``l1chain.server``), in unit tests and in the benchmark.
Persistence is injected: the ledger's archive keeps the blocks and a
:class:`MempoolJournal` keeps the mempool (``l1chain.store`` provides both).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator import policy
from emulator.tx import OutPoint, Tx, TxOut
from l1chain.block import Block, coinbase
from l1chain.errors import BadFaultRequest, RejectReason, TxRejected
from l1chain.ledger import Ledger
from l1chain.mempool import Entry, Mempool
from l1chain.miner import (
    COINBASE_RESERVE_BYTES,
    DEFAULT_MIN_FEERATE,
    MinerRules,
    assemble,
    estimate_fee,
)
from l1chain.rules import MAX_STANDARD_TX_BYTES, Coin, Verdict, check_tx

DEFAULT_MAX_BLOCK_BYTES = 1_000_000
MAX_FAULT_BLOCKS = 10_000


@dataclass(frozen=True)
class ChainLimits:
    """Sizes and fee floor; a small ``max_block_bytes`` emulates congestion."""

    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
    max_tx_bytes: int = MAX_STANDARD_TX_BYTES
    min_feerate: int = DEFAULT_MIN_FEERATE  # sat per 1,000 bytes: the fee estimate's floor

    @property
    def effective_max_tx_bytes(self) -> int:
        """The largest transaction that is standard and fits in a block."""
        return min(self.max_tx_bytes, self.max_block_bytes - COINBASE_RESERVE_BYTES)


class MempoolJournal(Protocol):
    """Where the mempool is kept across restarts."""

    def mempool_put(self, entry: Entry) -> None:
        """Remember an accepted entry."""

    def mempool_delete(self, txids: Iterable[bytes]) -> None:
        """Forget entries (confirmed, replaced or evicted)."""

    def mempool_clear(self) -> None:
        """Forget every entry."""

    def batch(self) -> AbstractContextManager[None]:
        """Make everything inside one atomic write."""


class NullJournal:
    """A mempool kept in memory only."""

    def mempool_put(self, entry: Entry) -> None:
        pass

    def mempool_delete(self, txids: Iterable[bytes]) -> None:
        pass

    def mempool_clear(self) -> None:
        pass

    def batch(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass(frozen=True)
class Accepted:
    """A transaction that entered the mempool."""

    txid: bytes
    fee_sat: int
    size: int
    replaced: list[bytes]
    revoked_inputs: tuple[int, ...]


@dataclass(frozen=True)
class Confirmed:
    """A transaction a block confirmed, and the inputs it spent by a revocation branch."""

    txid: bytes
    fee_sat: int
    revoked_inputs: tuple[int, ...]
    revoked_outpoints: tuple[OutPoint, ...]


@dataclass
class Mined:
    """A mined block, what it confirmed and what was evicted as no longer valid."""

    block: Block
    confirmed: list[Confirmed]
    evicted: list[tuple[bytes, str]]


@dataclass
class Reorged:
    """What a reorg did: blocks disconnected, txs returned, dropped, evicted; blocks mined."""

    depth: int
    fork_height: int
    old_tip: bytes
    disconnected: list[Block]
    returned: list[bytes]
    dropped: list[bytes]
    evicted: list[tuple[bytes, str]]
    mined: list[Mined] = field(default_factory=list)


class _PoolView:
    """Coins for a transaction entering the mempool: confirmed ones and mempool outputs."""

    def __init__(self, ledger: Ledger, mempool: Mempool) -> None:
        self.ledger = ledger
        self.mempool = mempool

    def coin(self, outpoint: OutPoint) -> Coin | None:
        return self.ledger.coin(outpoint) or self.mempool.coin(outpoint)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        return self.ledger.spender(outpoint)


class Chain:
    """What the chain process knows and decides, independent of its sockets."""

    def __init__(self, ledger: Ledger, miner_pubkey: bytes,
                 limits: ChainLimits | None = None,
                 journal: MempoolJournal | None = None) -> None:
        self.ledger = ledger
        self.mempool = Mempool()
        self.miner_pubkey = miner_pubkey
        self.limits = limits or ChainLimits()
        self.journal: MempoolJournal = journal or NullJournal()
        self.rules = MinerRules()

    @property
    def height(self) -> int:
        """The height of the tip."""
        return self.ledger.height

    # --- transactions ---------------------------------------------------------------
    def check(self, tx: Tx) -> tuple[Verdict, set[bytes]]:
        """Validate ``tx`` for the mempool without adding it; (verdict, txids it replaces)."""
        txid = tx.txid
        if txid in self.ledger.tx_index:
            height, index = self.ledger.tx_index[txid]
            raise TxRejected(RejectReason.ALREADY_CONFIRMED, f"{txid.hex()} is already in "
                             f"block {height}", height=height, index=index)
        if txid in self.mempool:
            raise TxRejected(RejectReason.DUPLICATE, f"{txid.hex()} is already in the mempool")
        view = _PoolView(self.ledger, self.mempool)
        verdict = check_tx(tx, self.height + 1, view, self.limits.effective_max_tx_bytes)
        return verdict, self.mempool.plan_add(tx, verdict)

    def submit(self, tx: Tx) -> Accepted:
        """Validate ``tx`` for the next block and add it to the mempool."""
        verdict, _ = self.check(tx)
        replaced = self.mempool.add(tx, verdict)
        with self.journal.batch():  # a replacement and what it replaces change together
            self.journal.mempool_delete(replaced)
            self.journal.mempool_put(self.mempool.entries[tx.txid])
        return Accepted(tx.txid, verdict.fee_sat, verdict.size, replaced,
                        verdict.revoked_inputs)

    def readmit(self, txs: Iterable[Tx]) -> list[tuple[bytes, str]]:
        """Submit ``txs`` in order (after a reorg or a restart); the (txid, reason) refused."""
        refused: list[tuple[bytes, str]] = []
        for tx in txs:
            try:
                self.submit(tx)
            except TxRejected as exc:
                refused.append((tx.txid, str(exc)))
        return refused

    # --- mining -----------------------------------------------------------------------
    def mine(self, time: float, nonce: int = 0) -> Mined:
        """Mine one block from the mempool and connect (and so store) it."""
        with self.journal.batch():
            return self._mine(time, nonce)

    def _mine(self, time: float, nonce: int) -> Mined:
        limits = self.limits
        template = assemble(self.ledger, self.mempool, self.rules, limits.max_block_bytes,
                            limits.effective_max_tx_bytes)
        evicted_ids = self.mempool.evict(txid for txid, _ in template.evicted)
        reasons = {txid: str(exc) for txid, exc in template.evicted}
        evicted = [(t, reasons.get(t, "a parent was evicted")) for t in evicted_ids]
        height, fees = self.height + 1, template.fees_sat
        outputs = [TxOut(fees, policy.pk(self.miner_pubkey))] if fees else []
        rates = [verdict.feerate for _, verdict in template.chosen]
        txs = [coinbase(height, outputs)] + [entry.tx for entry, _ in template.chosen]
        block = Block(height, self.ledger.tip.hash, time, txs, nonce, fees,
                      min(rates) if rates else None)
        self.ledger.connect(block)
        confirmed = [_confirmed(entry, verdict) for entry, verdict in template.chosen]
        self.mempool.remove(c.txid for c in confirmed)
        self.journal.mempool_delete([c.txid for c in confirmed] + evicted_ids)
        self.rules.block_mined()
        return Mined(block, confirmed, evicted)

    # --- faults -----------------------------------------------------------------------
    def reorg(self, depth: int, drop: Iterable[bytes] = (), mine: bool = True,
              time: float = 0.0) -> Reorged:
        """Disconnect ``depth`` blocks, return their txs (but ``drop``) to the mempool and,
        if ``mine``, mine a competing branch of ``depth + 1`` blocks."""
        if type(depth) is not int or not 1 <= depth <= self.height:
            raise BadFaultRequest(f"reorg depth must be from 1 to {self.height}, got {depth!r}")
        with self.journal.batch():
            return self._reorg(depth, set(drop), mine, time)

    def _reorg(self, depth: int, dropped: set[bytes], mine: bool, time: float) -> Reorged:
        old_tip = self.ledger.tip.hash
        disconnected = [self.ledger.disconnect()[0] for _ in range(depth)][::-1]
        returned = [tx for block in disconnected for tx in block.txs[1:]
                    if tx.txid not in dropped]
        old_pool = [e.tx for e in self.mempool.in_arrival_order() if e.txid not in dropped]
        self.mempool.remove(list(self.mempool.entries))
        self.journal.mempool_clear()
        evicted = self.readmit(returned + old_pool)
        result = Reorged(depth, self.height, old_tip, disconnected,
                         [tx.txid for tx in returned], sorted(dropped), evicted)
        nonces = {block.height: block.nonce + 1 for block in disconnected}
        for _ in range(depth + 1 if mine else 0):
            result.mined.append(self._mine(time, nonces.get(self.height + 1, 0)))
        return result

    def censor(self, txid: bytes, blocks: int) -> None:
        """Leave ``txid`` out of the next ``blocks`` blocks (0 lifts the censorship)."""
        _check_blocks(blocks)
        if blocks == 0:
            self.rules.censored.pop(txid, None)
        else:
            self.rules.censored[txid] = blocks

    def feespike(self, min_feerate: int, blocks: int) -> None:
        """Ignore transactions below ``min_feerate`` sat/kB for the next ``blocks`` blocks."""
        _check_blocks(blocks)
        if type(min_feerate) is not int or min_feerate < 0:
            raise BadFaultRequest(f"min_feerate must be a non-negative int, got {min_feerate!r}")
        self.rules.spike_feerate = min_feerate if blocks else 0
        self.rules.spike_blocks = blocks

    def estimate_fee(self, target_blocks: int = 1) -> dict[str, Any]:
        """A fee rate (sat per 1,000 bytes) to confirm within ``target_blocks``."""
        return estimate_fee(self.ledger.headers, self.mempool, self.rules,
                            self.limits.max_block_bytes, target_blocks, self.limits.min_feerate)


def _confirmed(entry: Entry, verdict: Verdict) -> Confirmed:
    outpoints = tuple(entry.tx.inputs[i].outpoint for i in verdict.revoked_inputs)
    return Confirmed(entry.txid, verdict.fee_sat, verdict.revoked_inputs, outpoints)


def _check_blocks(blocks: Any) -> None:
    if type(blocks) is not int or not 0 <= blocks <= MAX_FAULT_BLOCKS:
        raise BadFaultRequest(f"blocks must be an int from 0 to {MAX_FAULT_BLOCKS}, "
                              f"got {blocks!r}")
