"""The chain process: the ledger behind a control RPC and a block feed."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from emulator import envelope, transport
from emulator.errors import BadRequest, DecodeError, NotFound
from emulator.service import Service
from emulator.tx import OutPoint, Tx
from l1chain.chain import Accepted, Chain
from l1chain.ledger import TxRejected


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

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ChainConfig:
        allocs = [(bytes.fromhex(a["pubkey"]), int(a["amount_sat"]))
                  for a in obj.get("allocations", [])]
        return cls(control=obj["control"], blocks=obj["blocks"], data_dir=obj["data_dir"],
                   miner_pubkey=bytes.fromhex(obj["miner_pubkey"]), allocations=allocs,
                   block_interval=float(obj.get("block_interval", 0)),
                   events=obj.get("events"), parent_pid=obj.get("parent_pid"),
                   genesis_time=float(obj.get("genesis_time", 0)))


def _bytes_arg(value: Any, name: str, size: int | None = 32) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise BadRequest(f"{name} is not hex") from None
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise BadRequest(f"{name} must be {size} bytes")
    return value


class ChainService(Service):
    """Control verbs of the chain: queries, submit, mine, and mining control."""

    kind = "chain"

    def __init__(self, config: ChainConfig) -> None:
        super().__init__("chain", config.control, config.events, config.data_dir,
                         config.parent_pid)
        self.config = config
        self.chain = Chain(config.miner_pubkey)
        self.mining_paused = False
        self.pub = None

    async def setup(self) -> None:
        self.pub = transport.publisher(self.ctx, self.config.blocks)
        genesis = self.chain.ledger.genesis(self.config.allocations,
                                            self.config.genesis_time or time.time())
        self.events.emit("genesis", hash=genesis.hash, supply_sat=self.chain.ledger.supply_sat)
        if self.config.block_interval > 0:
            self.spawn(self._mine_on_interval(), "miner")

    async def teardown(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=0)

    def ready_info(self) -> dict[str, Any]:
        return {**super().ready_info(), "blocks": self.config.blocks}

    async def _mine_on_interval(self) -> None:
        while True:
            await asyncio.sleep(self.config.block_interval)
            if not self.mining_paused:
                await self._mine_one()

    async def _mine_one(self) -> dict[str, Any]:
        block, confirmed, evicted = self.chain.mine(time.time())
        for txid, reason in evicted:
            self.events.emit("tx_evicted", txid=txid, reason=reason)
        for acc in confirmed:
            self.events.emit("tx_confirmed", txid=acc.txid, height=block.height)
        self.events.emit("block", height=block.height, hash=block.hash, txs=len(block.txs))
        await self.pub.send(envelope.pack_block_announcement(block.header()))
        return block.header()

    # --- verbs ------------------------------------------------------------------
    async def rpc_getinfo(self) -> dict[str, Any]:
        """Height, tip, mempool size, supply and mining state."""
        ledger = self.chain.ledger
        return {"kind": "chain", "height": ledger.height, "tip": ledger.tip.hash,
                "mempool": len(self.chain.mempool), "supply_sat": ledger.supply_sat,
                "mining_paused": self.mining_paused,
                "block_interval": self.config.block_interval, "blocks": self.config.blocks}

    async def rpc_getheight(self) -> int:
        """The height of the tip."""
        return self.chain.height

    async def rpc_getblock(self, height: int | None = None, hash: Any = None) -> dict[str, Any]:
        """A block, with its transactions, by height or by hash."""
        ledger = self.chain.ledger
        if height is not None:
            if type(height) is not int or not 0 <= height <= ledger.height:
                raise NotFound(f"no block at height {height!r} (tip is {ledger.height})")
            return ledger.blocks[height].to_wire()
        if hash is not None:
            want = _bytes_arg(hash, "hash")
            for block in reversed(ledger.blocks):
                if block.hash == want:
                    return block.to_wire()
            raise NotFound(f"no block with hash {want.hex()}")
        raise BadRequest("getblock needs height or hash")

    async def rpc_gettx(self, txid: Any) -> dict[str, Any]:
        """A transaction's status: confirmed (height, index, confirmations) or in mempool."""
        want = _bytes_arg(txid, "txid")
        ledger = self.chain.ledger
        if want in ledger.tx_index:
            height, index = ledger.tx_index[want]
            tx = ledger.blocks[height].txs[index]
            return {"txid": want, "status": "confirmed", "height": height, "index": index,
                    "confirmations": ledger.height - height + 1, "tx": tx.to_wire()}
        entry = self.chain.mempool.entries.get(want)
        if entry is not None:
            return {"txid": want, "status": "mempool", "fee_sat": entry.fee_sat,
                    "confirmations": 0, "tx": entry.tx.to_wire()}
        raise NotFound(f"unknown transaction {want.hex()}")

    async def rpc_getutxo(self, txid: Any, vout: int) -> dict[str, Any] | None:
        """The unspent output at (txid, vout), or None when spent or unknown."""
        if type(vout) is not int or vout < 0:
            raise BadRequest("vout must be a non-negative int")
        coin = self.chain.ledger.coin(OutPoint(_bytes_arg(txid, "txid"), vout))
        return coin.to_wire() if coin else None

    async def rpc_listunspent(self, pubkey: Any) -> list[dict[str, Any]]:
        """Confirmed outputs locked to pk(pubkey)."""
        key = _bytes_arg(pubkey, "pubkey", 33)
        return [c.to_wire() for c in self.chain.ledger.unspent_for_key(key)]

    async def rpc_submittx(self, tx: Any) -> dict[str, Any]:
        """Validate a transaction and add it to the mempool; its txid or the rejection."""
        try:
            parsed = Tx.from_wire(tx)
        except DecodeError as exc:
            self.events.emit("tx_rejected", reason="malformed", error=str(exc))
            raise TxRejected("malformed", str(exc)) from None
        try:
            accepted: Accepted = self.chain.submit(parsed)
        except TxRejected as exc:
            self.events.emit("tx_rejected", txid=parsed.txid, reason=exc.reason, error=str(exc))
            raise
        self.events.emit("tx_accepted", txid=accepted.txid, fee_sat=accepted.fee_sat,
                         replaced=accepted.replaced)
        return {"txid": accepted.txid, "fee_sat": accepted.fee_sat,
                "replaced": accepted.replaced}

    async def rpc_getmempool(self) -> list[dict[str, Any]]:
        """Mempool entries, best fee rate first."""
        return [{"txid": e.txid, "fee_sat": e.fee_sat, "size": e.size}
                for e in self.chain.mempool.by_feerate()]

    async def rpc_mine(self, n: int = 1) -> list[dict[str, Any]]:
        """Mine n blocks now (even while interval mining is paused)."""
        if type(n) is not int or not 1 <= n <= 10_000:
            raise BadRequest(f"mine: n must be an int from 1 to 10000, got {n!r}")
        return [await self._mine_one() for _ in range(n)]

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

    async def rpc_verify(self) -> dict[str, Any]:
        """Rebuild the UTXO set from the blocks and check the supply invariant."""
        return self.chain.ledger.verify()
