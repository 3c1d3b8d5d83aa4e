"""The ledger: UTXO set, blocks and validation rules. Pure logic, no I/O.

The chain process (``l1chain.server``) wraps it with sockets and a mempool. Every
rule that decides whether a transaction may enter a block lives here, and every
rejection names its reason.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from emulator import policy
from emulator.errors import LnemuError
from emulator.tx import OutPoint, Tx, TxOut, is_final, sighash

DUST_LIMIT_SAT = 330
MAX_TX_BYTES = 100_000
MAX_SUPPLY_SAT = 21_000_000 * 100_000_000


class TxRejected(LnemuError):
    """A transaction that may not enter the mempool or a block; ``reason`` is a code."""

    code = "tx_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Coin:
    """An unspent output and where it was confirmed."""

    outpoint: OutPoint
    txout: TxOut
    height: int

    def to_wire(self) -> dict[str, Any]:
        return {"txid": self.outpoint.txid, "vout": self.outpoint.vout,
                "amount_sat": self.txout.amount_sat, "cond": self.txout.cond,
                "height": self.height}


@dataclass(frozen=True)
class Verdict:
    """What validation learned about a valid transaction."""

    fee_sat: int
    revoked_inputs: tuple[int, ...] = ()  # inputs spent through a revocation branch


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


@dataclass
class Block:
    """A block: header fields plus its transactions (the first pays the miner)."""

    height: int
    prev_hash: bytes
    time: float
    txs: list[Tx]
    hash: bytes = field(default=b"", init=False)

    def __post_init__(self) -> None:
        self.hash = sha256d(msgpack.packb(
            [self.height, self.prev_hash, self.tx_root(), self.time], use_bin_type=True))

    def tx_root(self) -> bytes:
        """The header's commitment to the block's txids."""
        return sha256d(b"".join(tx.txid for tx in self.txs))

    @property
    def txids(self) -> list[bytes]:
        return [tx.txid for tx in self.txs]

    def header(self) -> dict[str, Any]:
        return {"height": self.height, "hash": self.hash, "prev_hash": self.prev_hash,
                "time": self.time, "txids": self.txids}

    def to_wire(self) -> dict[str, Any]:
        return {**self.header(), "tx_root": self.tx_root(),
                "txs": [tx.to_wire() for tx in self.txs]}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Block:
        block = cls(obj["height"], obj["prev_hash"], obj["time"],
                    [Tx.from_wire(t) for t in obj["txs"]])
        if block.hash != obj["hash"]:
            raise ValueError(f"block {obj['height']}: hash does not match its contents")
        return block


def coinbase(height: int, outputs: list[TxOut]) -> Tx:
    """A transaction with no inputs; the locktime carries the height so txids differ."""
    return Tx(inputs=[], outputs=outputs, locktime=height)


class Ledger:
    """UTXO set, block list, and indexes for transactions and spends."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.utxos: dict[OutPoint, Coin] = {}
        self.tx_index: dict[bytes, tuple[int, int]] = {}  # txid -> (height, index)
        self.spent_by: dict[OutPoint, bytes] = {}  # outpoint -> spending txid
        self.supply_sat = 0

    @property
    def height(self) -> int:
        return len(self.blocks) - 1

    @property
    def tip(self) -> Block:
        return self.blocks[-1]

    def genesis(self, allocations: list[tuple[bytes, int]], time: float) -> Block:
        """Create block 0 paying each (pubkey, amount_sat); fixes the supply."""
        if self.blocks:
            raise ValueError("genesis already exists")
        outputs = [TxOut(amount, policy.pk(key)) for key, amount in allocations]
        block = Block(0, b"\x00" * 32, time, [coinbase(0, outputs)])
        self.supply_sat = sum(amount for _, amount in allocations)
        self.connect(block)
        return block

    def coin(self, outpoint: OutPoint) -> Coin | None:
        return self.utxos.get(outpoint)

    def check_tx(self, tx: Tx, spend_height: int) -> Verdict:
        """Validate ``tx`` for a block at ``spend_height``; raise TxRejected if invalid."""
        size = tx.size
        if size > MAX_TX_BYTES:
            raise TxRejected("oversized", f"{size} bytes > {MAX_TX_BYTES}")
        if not tx.inputs:
            raise TxRejected("no_inputs", "a transaction must spend at least one output")
        if len(tx.witnesses) != len(tx.inputs):
            raise TxRejected("missing_witness", f"{len(tx.witnesses)} witnesses for "
                             f"{len(tx.inputs)} inputs")
        if not is_final(tx, spend_height):
            raise TxRejected("non_final", f"locktime {tx.locktime} is above height {spend_height}")
        coins = self._input_coins(tx)
        fee = self._check_amounts(tx, coins)
        revoked = []
        for i, (txin, coin) in enumerate(zip(tx.inputs, coins, strict=True)):
            ctx = policy.SpendContext(
                sighash=sighash(tx, i, coin.txout.amount_sat, coin.txout.cond),
                locktime=tx.locktime, sequence=txin.sequence,
                spend_height=spend_height, confirmed_height=coin.height)
            try:
                result = policy.evaluate(coin.txout.cond, tx.witnesses[i], ctx)
            except policy.PolicyNotSatisfied as exc:
                raise TxRejected("policy", f"input {i}: {exc}") from None
            if result.revocation:
                revoked.append(i)
        return Verdict(fee, tuple(revoked))

    def _input_coins(self, tx: Tx) -> list[Coin]:
        seen: set[OutPoint] = set()
        coins = []
        for i, txin in enumerate(tx.inputs):
            op = txin.outpoint
            if op in seen:
                raise TxRejected("duplicate_input", f"input {i} spends {_op(op)} twice")
            seen.add(op)
            coin = self.utxos.get(op)
            if coin is None:
                if op in self.spent_by:
                    raise TxRejected("spent_input", f"input {i}: {_op(op)} already spent "
                                     f"by {self.spent_by[op].hex()}")
                raise TxRejected("missing_input", f"input {i}: {_op(op)} is unknown "
                                 "or not confirmed")
            coins.append(coin)
        return coins

    @staticmethod
    def _check_amounts(tx: Tx, coins: list[Coin]) -> int:
        total_in = sum(c.txout.amount_sat for c in coins)
        total_out = 0
        for j, out in enumerate(tx.outputs):
            if out.amount_sat < DUST_LIMIT_SAT:
                raise TxRejected("dust", f"output {j} of {out.amount_sat} sat is below "
                                 f"the dust limit of {DUST_LIMIT_SAT}")
            total_out += out.amount_sat
            if total_out > MAX_SUPPLY_SAT:
                raise TxRejected("amount_overflow", "outputs exceed the money supply")
        if total_out > total_in:
            raise TxRejected("outputs_exceed_inputs",
                             f"outputs {total_out} sat > inputs {total_in} sat")
        return total_in - total_out

    def connect(self, block: Block) -> None:
        """Apply a validated block to the UTXO set and indexes."""
        if block.height != len(self.blocks):
            raise ValueError(f"block {block.height} does not extend height {self.height}")
        if self.blocks and block.prev_hash != self.tip.hash:
            raise ValueError(f"block {block.height} does not build on the tip")
        for index, tx in enumerate(block.txs):
            txid = tx.txid
            for txin in tx.inputs:
                del self.utxos[txin.outpoint]
                self.spent_by[txin.outpoint] = txid
            for vout, out in enumerate(tx.outputs):
                op = OutPoint(txid, vout)
                self.utxos[op] = Coin(op, out, block.height)
            self.tx_index[txid] = (block.height, index)
        self.blocks.append(block)

    def utxo_total_sat(self) -> int:
        return sum(c.txout.amount_sat for c in self.utxos.values())

    def unspent_for_key(self, pubkey: bytes) -> list[Coin]:
        """Coins locked to ``pk(pubkey)`` alone."""
        want = policy.pk(pubkey)
        return [c for c in self.utxos.values() if c.txout.cond == want]

    def verify(self) -> dict[str, Any]:
        """Rebuild the UTXO set from the blocks and check it and the supply."""
        rebuilt = Ledger()
        for block in self.blocks:
            rebuilt.connect(block)
        total = rebuilt.utxo_total_sat()
        ok = rebuilt.utxos == self.utxos and total == self.supply_sat
        return {"ok": ok, "height": self.height, "utxo_total_sat": total,
                "supply_sat": self.supply_sat, "utxos": len(rebuilt.utxos)}


def _op(op: OutPoint) -> str:
    return f"{op.txid.hex()}:{op.vout}"
