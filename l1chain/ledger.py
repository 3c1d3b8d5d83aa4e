"""The ledger: block headers, UTXO set and indexes. Pure logic; block bodies live in an archive.

An :class:`Archive` keeps each block's body and undo data (the coins it spent): in
memory (:class:`MemoryArchive`) or in SQLite (``l1chain.store``). The ledger writes a
block to its archive before it changes any index, so that what is stored is never
behind what was served. Indexes: txid -> (height, index), spent outpoint -> spender,
block hash -> height, and pubkey -> coins locked to ``pk(pubkey)`` for ``listunspent``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator import policy
from emulator.tx import OutPoint, Tx, TxOut
from l1chain.block import GENESIS_PREV_HASH, Block, Header, coinbase
from l1chain.errors import BadBlock, ChainError
from l1chain.rules import Coin


class Archive(Protocol):
    """Where block bodies and undo data are kept."""

    def append(self, block: Block, undo: list[Coin]) -> None:
        """Keep ``block`` (the new tip) and the coins it spent."""

    def pop(self, height: int) -> None:
        """Forget the tip block at ``height``."""

    def block(self, height: int) -> Block:
        """The block at ``height``."""

    def undo(self, height: int) -> list[Coin]:
        """The coins the block at ``height`` spent, in input order."""


class MemoryArchive:
    """An archive in memory (tests, benchmarks, the rebuild of ``verify``)."""

    def __init__(self, keep_bodies: bool = True) -> None:
        self.keep_bodies = keep_bodies
        self.blocks: list[Block] = []
        self.undos: list[list[Coin]] = []

    def append(self, block: Block, undo: list[Coin]) -> None:
        if self.keep_bodies:
            self.blocks.append(block)
            self.undos.append(undo)

    def pop(self, height: int) -> None:
        if self.keep_bodies:
            del self.blocks[height:]
            del self.undos[height:]

    def block(self, height: int) -> Block:
        return self.blocks[height]

    def undo(self, height: int) -> list[Coin]:
        return self.undos[height]


@dataclass
class Snapshot:
    """Everything a store loads to restore a ledger without replaying its blocks."""

    headers: list[Header]
    utxos: dict[OutPoint, Coin]
    tx_index: dict[bytes, tuple[int, int]]
    spent_by: dict[OutPoint, bytes]
    supply_sat: int
    repaired: list[str] = field(default_factory=list)  # what loading had to fix


def key_of(cond: list) -> bytes | None:
    """The public key of a ``pk(key)`` policy, else None."""
    if len(cond) == 2 and cond[0] == "pk":
        return cond[1]
    return None


def block_delta(block: Block, undo: list[Coin]) -> tuple[list[Coin], list[Coin]]:
    """(coins from earlier blocks that ``block`` spends, coins it creates that stay unspent)."""
    created: dict[OutPoint, Coin] = {}
    for txid, tx in zip(block.txids, block.txs, strict=True):
        for vout, out in enumerate(tx.outputs):
            op = OutPoint(txid, vout)
            created[op] = Coin(op, out, block.height)
    spent_before = []
    for coin in undo:
        if created.pop(coin.outpoint, None) is None:
            spent_before.append(coin)
    return spent_before, list(created.values())


class Ledger:
    """Headers, UTXO set, and indexes for transactions, spends, hashes and keys."""

    def __init__(self, archive: Archive | None = None) -> None:
        self.archive: Archive = archive if archive is not None else MemoryArchive()
        self.headers: list[Header] = []
        self.by_hash: dict[bytes, int] = {}
        self.utxos: dict[OutPoint, Coin] = {}
        self.tx_index: dict[bytes, tuple[int, int]] = {}  # txid -> (height, index)
        self.spent_by: dict[OutPoint, bytes] = {}  # outpoint -> spending txid
        self.by_key: dict[bytes, set[OutPoint]] = {}  # pubkey -> outpoints locked to pk(it)
        self.supply_sat = 0

    @classmethod
    def restore(cls, snapshot: Snapshot, archive: Archive) -> Ledger:
        """A ledger from a loaded snapshot; the key index is rebuilt from the UTXOs."""
        ledger = cls(archive)
        ledger.headers = snapshot.headers
        ledger.by_hash = {h.hash: h.height for h in snapshot.headers}
        ledger.utxos = snapshot.utxos
        ledger.tx_index = snapshot.tx_index
        ledger.spent_by = snapshot.spent_by
        ledger.supply_sat = snapshot.supply_sat
        for coin in snapshot.utxos.values():
            ledger._index_key(coin)
        return ledger

    # --- queries ------------------------------------------------------------------
    @property
    def height(self) -> int:
        """The height of the tip (-1 before genesis)."""
        return len(self.headers) - 1

    @property
    def tip(self) -> Header:
        """The header of the tip block."""
        return self.headers[-1]

    def block(self, height: int) -> Block:
        """The block at ``height`` (from the archive)."""
        if not 0 <= height <= self.height:
            raise ChainError(f"no block at height {height} (tip is {self.height})")
        return self.archive.block(height)

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """The block with ``block_hash`` on the current chain, or None."""
        height = self.by_hash.get(block_hash)
        return None if height is None else self.archive.block(height)

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """The unspent output at ``outpoint``, or None."""
        return self.utxos.get(outpoint)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        """The confirmed transaction that spent ``outpoint``, or None."""
        return self.spent_by.get(outpoint)

    def unspent_for_key(self, pubkey: bytes) -> list[Coin]:
        """Coins locked to ``pk(pubkey)`` alone, oldest first (from the key index)."""
        coins = [self.utxos[op] for op in self.by_key.get(pubkey, ())]
        return sorted(coins, key=lambda c: (c.height, c.outpoint.txid, c.outpoint.vout))

    def utxo_total_sat(self) -> int:
        """The sum of all unspent outputs."""
        return sum(c.txout.amount_sat for c in self.utxos.values())

    # --- changes --------------------------------------------------------------------
    def genesis(self, allocations: list[tuple[bytes, int]], time: float) -> Block:
        """Create block 0 paying each (pubkey, amount_sat); it fixes the supply."""
        if self.headers:
            raise ChainError("genesis already exists")
        block = Block(0, GENESIS_PREV_HASH, time, [genesis_coinbase(allocations)])
        self.connect(block)
        return block

    def connect(self, block: Block) -> list[Coin]:
        """Archive ``block`` and apply it to the UTXO set and indexes; return its undo data.

        The block's transactions must already be valid (the miner checks them); here
        only the structure is checked: height, parent, coinbase, inputs that exist and
        are spent once, and a coinbase that pays exactly the fees.
        """
        if block.height != self.height + 1:
            raise BadBlock(f"block {block.height} does not extend height {self.height}")
        prev = self.tip.hash if self.headers else GENESIS_PREV_HASH
        if block.prev_hash != prev:
            raise BadBlock(f"block {block.height} does not build on the tip")
        undo = self._undo_for(block)
        self.archive.append(block, undo)
        self._apply(block, undo)
        return undo

    def disconnect(self) -> tuple[Block, list[Coin]]:
        """Remove the tip block (never genesis) using its undo data; return block and undo."""
        if self.height < 1:
            raise ChainError("cannot disconnect the genesis block")
        height = self.height
        block, undo = self.archive.block(height), self.archive.undo(height)
        self.archive.pop(height)
        spent_before, created = block_delta(block, undo)
        for coin in created:
            self._remove_coin(coin)
        for coin in spent_before:
            self._add_coin(coin)
        for txid, tx in zip(block.txids, block.txs, strict=True):
            del self.tx_index[txid]
            for txin in tx.inputs:
                self.spent_by.pop(txin.outpoint, None)
        del self.by_hash[block.hash]
        self.headers.pop()
        return block, undo

    def _undo_for(self, block: Block) -> list[Coin]:
        if not block.txs or block.txs[0].inputs:
            raise BadBlock(f"block {block.height}: the first transaction must be a coinbase")
        created: dict[OutPoint, Coin] = {}
        spent: set[OutPoint] = set()
        undo: list[Coin] = []
        for txid, tx in zip(block.txids, block.txs, strict=True):
            if txid in self.tx_index or (tx is not block.txs[0] and not tx.inputs):
                raise BadBlock(f"block {block.height}: bad transaction {txid.hex()}")
            for txin in tx.inputs:
                op = txin.outpoint
                coin = created.get(op) or self.utxos.get(op)
                if coin is None or op in spent:
                    raise BadBlock(f"block {block.height}: {op} is missing or spent twice")
                spent.add(op)
                undo.append(coin)
            for vout, out in enumerate(tx.outputs):
                op = OutPoint(txid, vout)
                created[op] = Coin(op, out, block.height)
        self._check_coinbase(block, undo)
        return undo

    def _check_coinbase(self, block: Block, undo: list[Coin]) -> None:
        if block.height == 0:
            return  # genesis creates the supply
        paid_in = sum(c.txout.amount_sat for c in undo)
        paid_out = sum(out.amount_sat for tx in block.txs[1:] for out in tx.outputs)
        reward = sum(out.amount_sat for out in block.txs[0].outputs)
        if reward != paid_in - paid_out:
            raise BadBlock(f"block {block.height}: coinbase pays {reward} sat, "
                           f"fees are {paid_in - paid_out} sat")

    def _apply(self, block: Block, undo: list[Coin]) -> None:
        spent_before, created = block_delta(block, undo)
        for coin in spent_before:
            self._remove_coin(coin)
        for coin in created:
            self._add_coin(coin)
        for index, (txid, tx) in enumerate(zip(block.txids, block.txs, strict=True)):
            self.tx_index[txid] = (block.height, index)
            for txin in tx.inputs:
                self.spent_by[txin.outpoint] = txid
        if block.height == 0:
            self.supply_sat = sum(out.amount_sat for out in block.txs[0].outputs)
        self.headers.append(block.header)
        self.by_hash[block.hash] = block.height

    def _add_coin(self, coin: Coin) -> None:
        self.utxos[coin.outpoint] = coin
        self._index_key(coin)

    def _index_key(self, coin: Coin) -> None:
        key = key_of(coin.txout.cond)
        if key is not None:
            self.by_key.setdefault(key, set()).add(coin.outpoint)

    def _remove_coin(self, coin: Coin) -> None:
        del self.utxos[coin.outpoint]
        key = key_of(coin.txout.cond)
        if key is not None:
            ops = self.by_key[key]
            ops.discard(coin.outpoint)
            if not ops:
                del self.by_key[key]

    # --- the invariant ----------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Rebuild the UTXO set and indexes from the blocks; check them and the supply."""
        rebuilt = Ledger(MemoryArchive(keep_bodies=False))
        problems: list[str] = []
        for height, header in enumerate(self.headers):
            try:
                block = self.archive.block(height)
                if block.hash != header.hash or header.recomputed_hash() != header.hash:
                    raise BadBlock(f"block {height}: stored block and header disagree")
                rebuilt.connect(block)
            except ChainError as exc:  # BadBlock, or StoreCorrupt from the archive
                problems.append(str(exc))
                break
        problems.extend(_compare(self, rebuilt))
        total = rebuilt.utxo_total_sat()
        if total != self.supply_sat:
            problems.append(f"UTXO total {total} sat != genesis supply {self.supply_sat} sat")
        return {"ok": not problems, "height": self.height,
                "tip": self.tip.hash if self.headers else None, "utxo_total_sat": total,
                "supply_sat": self.supply_sat, "utxos": len(rebuilt.utxos),
                "problems": problems}


def genesis_coinbase(allocations: Iterable[tuple[bytes, int]]) -> Tx:
    """The genesis transaction for (pubkey, amount_sat) allocations."""
    return coinbase(0, [TxOut(amount, policy.pk(key)) for key, amount in allocations])


def _compare(ledger: Ledger, rebuilt: Ledger) -> list[str]:
    problems = []
    for name in ("utxos", "tx_index", "spent_by", "by_key", "supply_sat"):
        if getattr(ledger, name) != getattr(rebuilt, name):
            problems.append(f"{name} differs from the one rebuilt from the blocks")
    if [h.hash for h in ledger.headers] != [h.hash for h in rebuilt.headers]:
        problems.append("headers differ from the blocks")
    return problems
