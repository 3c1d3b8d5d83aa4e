"""The chain process: the chain behind a control RPC, a block feed (PUB) and events.

Verbs are ``rpc_<verb>`` methods (queries in :class:`~l1chain.queries.ChainQueries`);
their docstrings are their help. State changes happen synchronously inside one verb
or one mining tick, so they never interleave; block announcements go out afterwards.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from emulator import envelope, transport
from emulator.errors import BadRequest, DecodeError
from emulator.service import Service
from emulator.tx import Tx
from l1chain.chain import DEFAULT_MAX_BLOCK_BYTES, Chain, ChainLimits, Mined, Reorged
from l1chain.errors import RejectReason, TxRejected
from l1chain.miner import DEFAULT_MIN_FEERATE
from l1chain.queries import ChainQueries, bytes_arg
from l1chain.rules import MAX_STANDARD_TX_BYTES
from l1chain.startup import open_chain
from l1chain.store import ChainStore

MAX_MINE_PER_CALL = 10_000
MIN_BLOCK_INTERVAL = 0.05  # seconds


@dataclass
class ChainConfig:
    """Everything the chain process needs; loaded from its JSON config file."""

    control: str
    blocks: str
    data_dir: str
    miner_pubkey: bytes
    allocations: list[tuple[bytes, int]] = field(default_factory=list)
    block_interval: float = 0.0  # seconds; 0 = mine on demand only
    events: str | None = None
    parent_pid: int | None = None
    genesis_time: float = 0.0
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
    max_tx_bytes: int = MAX_STANDARD_TX_BYTES
    min_feerate_sat_per_kb: int = DEFAULT_MIN_FEERATE

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ChainConfig:
        """Parse the JSON config (hex keys, optional limits)."""
        allocs = [(bytes.fromhex(a["pubkey"]), int(a["amount_sat"]))
                  for a in obj.get("allocations", [])]
        interval = float(obj.get("block_interval", 0))
        if 0 < interval < MIN_BLOCK_INTERVAL:
            raise BadRequest(f"block_interval must be 0 or at least {MIN_BLOCK_INTERVAL} s")
        return cls(control=obj["control"], blocks=obj["blocks"], data_dir=obj["data_dir"],
                   miner_pubkey=bytes.fromhex(obj["miner_pubkey"]), allocations=allocs,
                   block_interval=interval, events=obj.get("events"),
                   parent_pid=obj.get("parent_pid"),
                   genesis_time=float(obj.get("genesis_time", 0)),
                   max_block_bytes=int(obj.get("max_block_bytes", DEFAULT_MAX_BLOCK_BYTES)),
                   max_tx_bytes=int(obj.get("max_tx_bytes", MAX_STANDARD_TX_BYTES)),
                   min_feerate_sat_per_kb=int(obj.get("min_feerate_sat_per_kb",
                                                      DEFAULT_MIN_FEERATE)))

    @property
    def limits(self) -> ChainLimits:
        """The chain's size and fee limits."""
        return ChainLimits(self.max_block_bytes, self.max_tx_bytes, self.min_feerate_sat_per_kb)


def parse_tx(tx: Any) -> Tx:
    """A transaction from its wire map or msgpack bytes; TxRejected(malformed) if bad."""
    try:
        return Tx.deserialize(tx) if isinstance(tx, bytes) else Tx.from_wire(tx)
    except DecodeError as exc:
        raise TxRejected(RejectReason.MALFORMED, str(exc)) from None


class ChainService(ChainQueries, Service):
    """Control verbs of the chain: queries, submit, mine, mining control and faults."""

    kind = "chain"

    def __init__(self, config: ChainConfig) -> None:
        super().__init__("chain", config.control, config.events, config.data_dir,
                         config.parent_pid)
        self.config = config
        self.chain: Chain | None = None
        self.store: ChainStore | None = None
        self.mining_paused = False
        self.pub = None

    async def setup(self) -> None:
        self.pub = transport.publisher(self.ctx, self.config.blocks)
        opened = open_chain(self.data_dir, self.config.allocations, self.config.miner_pubkey,
                            self.config.limits, self.config.genesis_time or time.time())
        self.chain, self.store = opened.chain, opened.store
        ledger = self.chain.ledger
        if opened.created:
            self.events.emit("genesis", hash=ledger.tip.hash, supply_sat=ledger.supply_sat)
        else:
            self.events.emit("chain_loaded", height=ledger.height, tip=ledger.tip.hash,
                             repaired=opened.repaired, mempool=opened.mempool_restored,
                             mempool_refused=[t for t, _ in opened.mempool_refused])
        if self.config.block_interval > 0:
            self.spawn(self._mine_on_interval(), "miner")

    async def teardown(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=0)
        if self.store is not None:
            self.store.close()

    def ready_info(self) -> dict[str, Any]:
        return {**super().ready_info(), "blocks": self.config.blocks}

    # --- mining -------------------------------------------------------------------
    async def _mine_on_interval(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.block_interval
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())  # no burst after a stall
            if not self.mining_paused:
                await self._announce([self.chain.mine(time.time())])

    async def _announce(self, mined: list[Mined]) -> None:
        """Report mined blocks as events, then publish them on the block feed."""
        for item in mined:
            self._report_block(item)
        for item in mined:
            await self.pub.send(envelope.pack_block_announcement(item.block.announcement()))

    def _report_block(self, mined: Mined) -> None:
        block = mined.block
        for txid, reason in mined.evicted:
            self.events.emit("tx_evicted", txid=txid, reason=reason)
        for conf in mined.confirmed:
            self.events.emit("tx_confirmed", txid=conf.txid, height=block.height)
            if conf.revoked_inputs:
                # A revocation branch was spent: the cheater's funds went to the victim.
                self.events.emit("penalty", txid=conf.txid, inputs=list(conf.revoked_inputs),
                                 outpoints=[{"txid": op.txid, "vout": op.vout}
                                            for op in conf.revoked_outpoints],
                                 height=block.height, block_hash=block.hash)
        self.events.emit("block", height=block.height, hash=block.hash, txs=len(block.txs),
                         size=block.size, fees_sat=block.fees_sat)

    # --- transactions ----------------------------------------------------------------
    async def rpc_submittx(self, tx: Any) -> dict[str, Any]:
        """Validate a transaction and add it to the mempool; its txid or the typed rejection."""
        parsed: Tx | None = None
        try:
            parsed = parse_tx(tx)
            accepted = self.chain.submit(parsed)
        except TxRejected as exc:
            txid = parsed.txid if parsed is not None else None
            self.events.emit("tx_rejected", txid=txid, **exc.to_wire())
            raise
        self.events.emit("tx_accepted", txid=accepted.txid, fee_sat=accepted.fee_sat,
                         replaced=accepted.replaced)
        return {"txid": accepted.txid, "fee_sat": accepted.fee_sat, "size": accepted.size,
                "feerate_sat_per_kb": accepted.fee_sat * 1000 // max(accepted.size, 1),
                "replaced": accepted.replaced}

    async def rpc_checktx(self, tx: Any) -> dict[str, Any]:
        """Validate a transaction without adding it: allowed, or the reason and its details."""
        try:
            parsed = parse_tx(tx)
        except TxRejected as exc:
            return {"allowed": False, "txid": None, **exc.to_wire()}
        try:
            verdict, replaces = self.chain.check(parsed)
        except TxRejected as exc:
            return {"allowed": False, "txid": parsed.txid, **exc.to_wire()}
        return {"allowed": True, "txid": parsed.txid, "fee_sat": verdict.fee_sat,
                "size": verdict.size, "feerate_sat_per_kb": verdict.feerate,
                "replaces": sorted(replaces), "revoked_inputs": list(verdict.revoked_inputs)}

    # --- mining control ---------------------------------------------------------------
    async def rpc_mine(self, n: int = 1) -> list[dict[str, Any]]:
        """Mine n blocks now (even while interval mining is paused); their headers."""
        if type(n) is not int or not 1 <= n <= MAX_MINE_PER_CALL:
            raise BadRequest(f"mine: n must be an int from 1 to {MAX_MINE_PER_CALL}, got {n!r}")
        mined = [self.chain.mine(time.time()) for _ in range(n)]
        await self._announce(mined)
        return [item.block.header.to_wire() for item in mined]

    async def rpc_pausemining(self) -> bool:
        """Stop interval mining until resumemining."""
        self.mining_paused = True
        self.events.emit("mining_paused")
        return True

    async def rpc_resumemining(self) -> bool:
        """Resume interval mining."""
        self.mining_paused = False
        self.events.emit("mining_resumed")
        return True

    # --- faults -------------------------------------------------------------------------
    async def rpc_reorg(self, depth: int, drop: list | None = None,
                        mine: bool = True) -> dict[str, Any]:
        """Disconnect the last ``depth`` blocks, return their txs (but ``drop``) to the
        mempool and, if ``mine``, mine a competing branch of depth + 1 blocks."""
        if not isinstance(drop, (list, type(None))) or not isinstance(mine, bool):
            raise BadRequest("reorg: drop must be a list of txids and mine a bool")
        dropped = [bytes_arg(t, "drop[]") for t in drop or []]
        result: Reorged = self.chain.reorg(depth, dropped, mine, time.time())
        summary = _reorg_summary(result, self.chain)
        self.events.emit("reorg", **{k: v for k, v in summary.items() if k != "mined"})
        for txid, reason in result.evicted:
            self.events.emit("tx_evicted", txid=txid, reason=reason)
        await self._announce(result.mined)
        return summary

    async def rpc_censor(self, txid: Any, blocks: int) -> dict[str, Any]:
        """Leave ``txid`` in the mempool but out of the next ``blocks`` blocks (0 lifts it)."""
        want = bytes_arg(txid, "txid")
        self.chain.censor(want, blocks)
        self.events.emit("censor", txid=want, blocks=blocks)
        return self.chain.rules.to_wire()

    async def rpc_feespike(self, min_feerate_sat_per_kb: int, blocks: int) -> dict[str, Any]:
        """Ignore transactions below ``min_feerate_sat_per_kb`` for the next ``blocks`` blocks;
        estimatefee reports the spike meanwhile (blocks=0 ends it)."""
        self.chain.feespike(min_feerate_sat_per_kb, blocks)
        self.events.emit("feespike", min_feerate_sat_per_kb=min_feerate_sat_per_kb,
                         blocks=blocks)
        return self.chain.rules.to_wire()


def _reorg_summary(result: Reorged, chain: Chain) -> dict[str, Any]:
    return {"depth": result.depth, "fork_height": result.fork_height,
            "old_tip": result.old_tip, "new_tip": chain.ledger.tip.hash,
            "height": chain.height,
            "disconnected": [block.hash for block in result.disconnected],
            "returned": result.returned, "dropped": result.dropped,
            "evicted": [{"txid": t, "reason": r} for t, r in result.evicted],
            "mined": [m.block.header.to_wire() for m in result.mined]}
