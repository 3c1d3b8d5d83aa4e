"""Blocks: a header (previous hash, height, commitment to the txids, time) and the txs.

The first transaction of every block is its coinbase: no inputs, the block's fees to
the miner (genesis: the whole supply to the scenario's wallets). The header hash
commits to height, previous hash, the txid commitment, time and a nonce, so that two
blocks at one height (a reorg's competing branch) never share a hash.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from emulator.errors import DecodeError
from emulator.tx import Tx, TxOut
from l1chain.errors import StoreCorrupt

GENESIS_PREV_HASH = b"\x00" * 32


def sha256d(data: bytes) -> bytes:
    """Double SHA-256."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def header_hash(height: int, prev_hash: bytes, tx_root: bytes, time: float, nonce: int) -> bytes:
    """The block hash: double SHA-256 of the msgpack header fields."""
    return sha256d(msgpack.packb([height, prev_hash, tx_root, time, nonce], use_bin_type=True))


def tx_root(txids: list[bytes]) -> bytes:
    """The header's commitment to the block's txids, in order."""
    return sha256d(b"".join(txids))


def coinbase(height: int, outputs: list[TxOut]) -> Tx:
    """A transaction with no inputs; the locktime carries the height so txids differ."""
    return Tx(inputs=[], outputs=outputs, locktime=height)


@dataclass(frozen=True)
class Header:
    """What the ledger keeps in memory for every block (bodies live in the archive)."""

    height: int
    hash: bytes
    prev_hash: bytes
    time: float
    tx_root: bytes
    nonce: int
    size: int  # bytes of all transactions, coinbase included
    tx_count: int
    fees_sat: int  # paid by the block's transactions to the miner
    min_feerate: int | None  # lowest fee rate (sat per 1,000 bytes) it confirmed

    def recomputed_hash(self) -> bytes:
        """The hash the header fields give (differs from ``hash`` if a record is bad)."""
        return header_hash(self.height, self.prev_hash, self.tx_root, self.time, self.nonce)

    def to_wire(self) -> dict[str, Any]:
        """The header as a plain map."""
        return {"height": self.height, "hash": self.hash, "prev_hash": self.prev_hash,
                "time": self.time, "tx_root": self.tx_root, "nonce": self.nonce,
                "size": self.size, "tx_count": self.tx_count, "fees_sat": self.fees_sat,
                "min_feerate_sat_per_kb": self.min_feerate}


class Block:
    """A block: header fields plus its transactions (the first pays the miner)."""

    def __init__(self, height: int, prev_hash: bytes, time: float, txs: list[Tx],
                 nonce: int = 0, fees_sat: int = 0, min_feerate: int | None = None) -> None:
        self.height = height
        self.prev_hash = prev_hash
        self.time = time
        self.txs = txs
        self.nonce = nonce
        self.fees_sat = fees_sat  # facts the miner knew; not hashed, kept by the store
        self.min_feerate = min_feerate
        self.txids = [tx.txid for tx in txs]
        self.tx_root = tx_root(self.txids)
        self.hash = header_hash(height, prev_hash, self.tx_root, time, nonce)
        self.size = sum(tx.size for tx in txs)

    def __repr__(self) -> str:
        return f"<Block {self.height} {self.hash.hex()[:16]} txs={len(self.txs)}>"

    @property
    def header(self) -> Header:
        """The in-memory summary of this block."""
        return Header(self.height, self.hash, self.prev_hash, self.time, self.tx_root,
                      self.nonce, self.size, len(self.txs), self.fees_sat, self.min_feerate)

    def announcement(self) -> dict[str, Any]:
        """What the block feed publishes (the ``block`` message schema)."""
        return {"height": self.height, "hash": self.hash, "prev_hash": self.prev_hash,
                "time": self.time, "txids": self.txids}

    def to_wire(self) -> dict[str, Any]:
        """Header fields, txids and full transactions, as a plain map."""
        return {**self.header.to_wire(), "txids": self.txids,
                "txs": [tx.to_wire() for tx in self.txs]}

    def encode_body(self) -> bytes:
        """The transactions as msgpack, for the store."""
        return msgpack.packb([tx.to_wire() for tx in self.txs], use_bin_type=True)

    @classmethod
    def from_stored(cls, header: Header, body: bytes) -> Block:
        """Rebuild a block from its stored header and body; StoreCorrupt if they differ."""
        try:
            txs = [Tx.from_wire(t) for t in msgpack.unpackb(body, raw=False)]
        except (DecodeError, ValueError, TypeError, msgpack.ExtraData) as exc:
            raise StoreCorrupt(f"block {header.height}: unreadable body ({exc})") from None
        block = cls(header.height, header.prev_hash, header.time, txs, header.nonce,
                    header.fees_sat, header.min_feerate)
        if block.hash != header.hash:
            raise StoreCorrupt(f"block {header.height}: body does not match its header")
        return block
