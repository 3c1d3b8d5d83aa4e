"""Block assembly and fee estimation: what the next block holds, and what it costs to get in.

The miner takes mempool entries by fee rate, parents before children, until the block
is full (so congestion can be emulated with a small ``max_block_bytes``), re-validating
each against the UTXO set plus what the block already holds: nothing invalid ever
enters a block. :class:`MinerRules` carries the chaos hooks: censored txids and a
fee spike that leaves cheap transactions out for some blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.tx import OutPoint, Tx
from l1chain.block import Header
from l1chain.errors import TxRejected
from l1chain.ledger import Ledger
from l1chain.mempool import Entry, Mempool
from l1chain.rules import Coin, Verdict, check_tx

COINBASE_RESERVE_BYTES = 200  # room kept for the coinbase in every block
DEFAULT_MIN_FEERATE = 1_000  # sat per 1,000 bytes: the estimate's floor (1 sat/vB)
FULL_BLOCK_RATIO = 0.9  # a block this full says fees are competing
RECENT_BLOCKS = 6  # blocks whose fee rates the estimate considers


@dataclass
class MinerRules:
    """Chaos hooks: txids left out for some blocks, and a fee-rate floor for some blocks."""

    censored: dict[bytes, int] = field(default_factory=dict)  # txid -> blocks left
    spike_feerate: int = 0
    spike_blocks: int = 0

    def excludes(self, entry: Entry) -> str | None:
        """Why the miner leaves ``entry`` out of the next block, or None."""
        if entry.txid in self.censored:
            return "censored"
        if self.spike_blocks > 0 and entry.fee_sat * 1000 < self.spike_feerate * entry.size:
            return "below the fee spike"
        return None

    def block_mined(self) -> None:
        """Count one block off every censorship and the fee spike."""
        for txid in list(self.censored):
            self.censored[txid] -= 1
            if self.censored[txid] <= 0:
                del self.censored[txid]
        if self.spike_blocks > 0:
            self.spike_blocks -= 1
        if self.spike_blocks == 0:
            self.spike_feerate = 0

    def to_wire(self) -> dict[str, Any]:
        """The active rules as a plain map."""
        return {"censored": {t.hex(): n for t, n in self.censored.items()},
                "feespike": {"min_feerate_sat_per_kb": self.spike_feerate,
                             "blocks": self.spike_blocks}}


class BlockView:
    """The UTXO set as the block being built sees it: with its outputs, minus its spends."""

    def __init__(self, ledger: Ledger, height: int) -> None:
        self.ledger = ledger
        self.height = height
        self.created: dict[OutPoint, Coin] = {}
        self.spent: dict[OutPoint, bytes] = {}

    def coin(self, outpoint: OutPoint) -> Coin | None:
        if outpoint in self.spent:
            return None
        return self.created.get(outpoint) or self.ledger.coin(outpoint)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        return self.spent.get(outpoint) or self.ledger.spender(outpoint)

    def take(self, tx: Tx) -> None:
        """Record that the block now holds ``tx``."""
        txid = tx.txid
        for txin in tx.inputs:
            self.spent[txin.outpoint] = txid
        for vout, out in enumerate(tx.outputs):
            op = OutPoint(txid, vout)
            self.created[op] = Coin(op, out, self.height)


@dataclass
class Template:
    """What the next block will hold, and what the miner threw out on the way."""

    chosen: list[tuple[Entry, Verdict]]
    evicted: list[tuple[bytes, TxRejected]]
    size: int

    @property
    def fees_sat(self) -> int:
        """The fees of the chosen transactions."""
        return sum(verdict.fee_sat for _, verdict in self.chosen)


def assemble(ledger: Ledger, mempool: Mempool, rules: MinerRules, max_block_bytes: int,
             max_tx_bytes: int) -> Template:
    """Choose the next block's transactions by fee rate, parents first, within the size."""
    height = ledger.height + 1
    view = BlockView(ledger, height)
    budget = max_block_bytes - COINBASE_RESERVE_BYTES
    template = Template([], [], 0)
    taken: set[bytes] = set()
    pending = [e for e in mempool.by_feerate() if rules.excludes(e) is None]
    progress = True
    while pending and progress:  # each pass can take children of what the last one took
        progress, waiting = False, []
        for entry in pending:
            if not entry.parents <= taken:
                waiting.append(entry)
                continue
            if template.size + entry.size > budget:
                continue  # congestion: it waits for a later block
            try:
                verdict = check_tx(entry.tx, height, view, max_tx_bytes)
            except TxRejected as exc:
                template.evicted.append((entry.txid, exc))
                continue
            view.take(entry.tx)
            taken.add(entry.txid)
            template.chosen.append((entry, verdict))
            template.size += entry.size
            progress = True
        pending = waiting
    return template


def estimate_fee(headers: list[Header], mempool: Mempool, rules: MinerRules,
                 max_block_bytes: int, target_blocks: int,
                 floor: int = DEFAULT_MIN_FEERATE) -> dict[str, Any]:
    """A fee rate (sat per 1,000 bytes) likely to confirm within ``target_blocks``."""
    candidates = {"floor": floor}
    budget = (max_block_bytes - COINBASE_RESERVE_BYTES) * target_blocks
    backlog = 0
    for entry in mempool.by_feerate():
        if rules.excludes(entry) is not None:
            continue
        backlog += entry.size
        # A newcomer of about this size, ranked above ``entry``, would push it out of the
        # target blocks: so it has to outbid it.
        if backlog + entry.size > budget:
            candidates["mempool"] = entry.feerate + 1
            break
    full = [h.min_feerate for h in headers[-RECENT_BLOCKS:]
            if h.height > 0 and h.min_feerate is not None
            and h.size >= FULL_BLOCK_RATIO * max_block_bytes]
    if full:
        candidates["recent_blocks"] = max(full)
    if rules.spike_blocks > 0:
        candidates["feespike"] = rules.spike_feerate
    basis = max(candidates, key=lambda k: candidates[k])
    return {"feerate_sat_per_kb": candidates[basis], "target_blocks": target_blocks,
            "basis": basis, "mempool_bytes": mempool.total_bytes,
            "feespike_blocks": rules.spike_blocks}
