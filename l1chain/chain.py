"""Chain state: the ledger plus the mempool and block assembly. No sockets."""
from __future__ import annotations

from dataclasses import dataclass

from emulator import policy
from emulator.tx import Tx, TxOut
from l1chain.ledger import Block, Ledger, TxRejected, Verdict, coinbase
from l1chain.mempool import Mempool

DEFAULT_MAX_BLOCK_BYTES = 1_000_000


@dataclass(frozen=True)
class Accepted:
    txid: bytes
    fee_sat: int
    replaced: list[bytes]
    revoked_inputs: tuple[int, ...]


class Chain:
    """What the chain process knows and decides, independent of its sockets."""

    def __init__(self, miner_pubkey: bytes, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES):
        self.ledger = Ledger()
        self.mempool = Mempool()
        self.miner_pubkey = miner_pubkey
        self.max_block_bytes = max_block_bytes

    @property
    def height(self) -> int:
        return self.ledger.height

    def submit(self, tx: Tx) -> Accepted:
        """Validate ``tx`` for the next block and add it to the mempool."""
        if tx.txid in self.ledger.tx_index:
            raise TxRejected("already_confirmed", f"{tx.txid.hex()} is already in a block")
        verdict: Verdict = self.ledger.check_tx(tx, self.height + 1)
        replaced = self.mempool.add(tx, verdict.fee_sat)
        return Accepted(tx.txid, verdict.fee_sat, replaced, verdict.revoked_inputs)

    def mine(self, time: float) -> tuple[Block, list[Accepted], list[tuple[bytes, str]]]:
        """Mine one block from the mempool; return it, what it confirmed and what
        was evicted as no longer valid (txid, reason)."""
        height = self.height + 1
        chosen: list[Tx] = []
        confirmed: list[Accepted] = []
        evicted: list[tuple[bytes, str]] = []
        size, fees = 0, 0
        view = _BlockView(self.ledger)
        for entry in self.mempool.by_feerate():
            if size + entry.size > self.max_block_bytes:
                continue  # congestion: it waits for a later block
            try:
                verdict = view.check_and_spend(entry.tx, height)
            except TxRejected as exc:
                evicted.append((entry.txid, str(exc)))
                continue
            chosen.append(entry.tx)
            confirmed.append(Accepted(entry.txid, verdict.fee_sat, [], verdict.revoked_inputs))
            size += entry.size
            fees += verdict.fee_sat
        outputs = [TxOut(fees, policy.pk(self.miner_pubkey))] if fees else []
        block = Block(height, self.ledger.tip.hash, time, [coinbase(height, outputs), *chosen])
        self.ledger.connect(block)
        self.mempool.remove([e[0] for e in evicted] + [a.txid for a in confirmed])
        return block, confirmed, evicted


class _BlockView:
    """Validation against the ledger plus what the block being built already spent."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.spent: set = set()

    def check_and_spend(self, tx: Tx, height: int) -> Verdict:
        for txin in tx.inputs:
            if txin.outpoint in self.spent:
                raise TxRejected("spent_input", "input already spent in this block")
        verdict = self.ledger.check_tx(tx, height)
        self.spent.update(txin.outpoint for txin in tx.inputs)
        return verdict
