"""The chain's read-only control verbs: heights, blocks, transactions, coins, fees, verify.

Every lookup goes through an index (hash -> height, txid -> position, outpoint ->
spender, pubkey -> coins); nothing scans the chain except ``verify``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator.errors import BadRequest, NotFound
from emulator.tx import OutPoint

if TYPE_CHECKING:
    from l1chain.chain import Chain

MAX_FEE_TARGET_BLOCKS = 1_008
MAX_HEADERS = 2_000


def bytes_arg(value: Any, name: str, size: int | None = 32) -> bytes:
    """An RPC argument that must be bytes of ``size`` (hex strings are accepted too)."""
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise BadRequest(f"{name} is not hex") from None
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise BadRequest(f"{name} must be {size} bytes")
    return value


def _outpoint_arg(txid: Any, vout: Any) -> OutPoint:
    if type(vout) is not int or vout < 0:
        raise BadRequest("vout must be a non-negative int")
    return OutPoint(bytes_arg(txid, "txid"), vout)


class ChainQueries:
    """Mixed into the chain service: the verbs that only read."""

    chain: Chain
    config: Any
    mining_paused: bool

    async def rpc_getinfo(self) -> dict[str, Any]:
        """Height, tip, mempool size, supply, limits, mining state and active faults."""
        chain = self.chain
        ledger = chain.ledger
        return {"kind": "chain", "height": ledger.height, "tip": ledger.tip.hash,
                "mempool": len(chain.mempool), "mempool_bytes": chain.mempool.total_bytes,
                "supply_sat": ledger.supply_sat, "utxos": len(ledger.utxos),
                "mining_paused": self.mining_paused,
                "block_interval": self.config.block_interval, "blocks": self.config.blocks,
                "max_block_bytes": chain.limits.max_block_bytes,
                "max_tx_bytes": chain.limits.effective_max_tx_bytes,
                **chain.rules.to_wire()}

    async def rpc_getheight(self) -> int:
        """The height of the tip."""
        return self.chain.height

    async def rpc_getblock(self, height: int | None = None, hash: Any = None) -> dict[str, Any]:
        """A block, with its header fields and transactions, by height or by hash."""
        ledger = self.chain.ledger
        if height is not None:
            if type(height) is not int or not 0 <= height <= ledger.height:
                raise NotFound(f"no block at height {height!r} (tip is {ledger.height})")
            return ledger.block(height).to_wire()
        if hash is not None:
            want = bytes_arg(hash, "hash")
            block = ledger.block_by_hash(want)
            if block is None:
                raise NotFound(f"no block with hash {want.hex()} on the chain")
            return block.to_wire()
        raise BadRequest("getblock needs height or hash")

    async def rpc_getheaders(self, start: int = 0, count: int = MAX_HEADERS) -> list[dict]:
        """Up to ``count`` block headers (without transactions) from height ``start`` on."""
        if type(start) is not int or start < 0 or type(count) is not int or not (
                1 <= count <= MAX_HEADERS):
            raise BadRequest(f"getheaders: start >= 0 and 1 <= count <= {MAX_HEADERS}")
        return [h.to_wire() for h in self.chain.ledger.headers[start:start + count]]

    async def rpc_gettx(self, txid: Any) -> dict[str, Any]:
        """A transaction: confirmed (height, index in block, confirmations) or in the mempool."""
        want = bytes_arg(txid, "txid")
        chain = self.chain
        ledger = chain.ledger
        if want in ledger.tx_index:
            height, index = ledger.tx_index[want]
            block = ledger.block(height)
            return {"txid": want, "status": "confirmed", "height": height, "index": index,
                    "blockhash": block.hash, "confirmations": ledger.height - height + 1,
                    "tx": block.txs[index].to_wire()}
        entry = chain.mempool.entries.get(want)
        if entry is not None:
            return {"txid": want, "status": "mempool", "fee_sat": entry.fee_sat,
                    "size": entry.size, "feerate_sat_per_kb": entry.feerate,
                    "confirmations": 0, "tx": entry.tx.to_wire()}
        raise NotFound(f"unknown transaction {want.hex()}")

    async def rpc_getutxo(self, txid: Any, vout: int) -> dict[str, Any] | None:
        """The confirmed unspent output at (txid, vout), or None when spent or unknown."""
        coin = self.chain.ledger.coin(_outpoint_arg(txid, vout))
        return coin.to_wire() if coin else None

    async def rpc_getspender(self, txid: Any, vout: int) -> dict[str, Any] | None:
        """Who spent (txid, vout): the spending txid and its height, or status mempool;
        None if nothing spends it."""
        op = _outpoint_arg(txid, vout)
        ledger = self.chain.ledger
        spender = ledger.spender(op)
        if spender is not None:
            height, index = ledger.tx_index[spender]
            return {"txid": spender, "status": "confirmed", "height": height, "index": index,
                    "confirmations": ledger.height - height + 1}
        spender = self.chain.mempool.spender(op)
        if spender is not None:
            return {"txid": spender, "status": "mempool", "height": None, "index": None,
                    "confirmations": 0}
        return None

    async def rpc_listunspent(self, pubkey: Any) -> list[dict[str, Any]]:
        """Confirmed outputs locked to pk(pubkey), oldest first."""
        key = bytes_arg(pubkey, "pubkey", 33)
        return [c.to_wire() for c in self.chain.ledger.unspent_for_key(key)]

    async def rpc_getmempool(self) -> list[dict[str, Any]]:
        """Mempool entries, best fee rate first (with size, fee rate, parents, censorship)."""
        rules = self.chain.rules
        return [{**e.to_wire(), "excluded": rules.excludes(e)}
                for e in self.chain.mempool.by_feerate()]

    async def rpc_estimatefee(self, target_blocks: int = 1) -> dict[str, Any]:
        """A fee rate in sat per 1,000 bytes to confirm within ``target_blocks``, from the
        mempool backlog and recent full blocks, never below an active fee spike."""
        if type(target_blocks) is not int or not 1 <= target_blocks <= MAX_FEE_TARGET_BLOCKS:
            raise BadRequest(f"target_blocks must be an int from 1 to {MAX_FEE_TARGET_BLOCKS}")
        return self.chain.estimate_fee(target_blocks)

    async def rpc_verify(self) -> dict[str, Any]:
        """Rebuild the UTXO set from the blocks and check it and the supply invariant."""
        return self.chain.ledger.verify()
