"""Opening the chain: a new genesis, or the stored chain and its mempool from ``chain.sqlite``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from emulator.errors import DecodeError
from emulator.tx import Tx
from l1chain.chain import Chain, ChainLimits
from l1chain.ledger import Ledger, genesis_coinbase
from l1chain.store import ChainStore

log = logging.getLogger("chain.startup")

STORE_FILE = "chain.sqlite"


@dataclass
class Opened:
    """A chain ready to run, and what opening it found."""

    chain: Chain
    store: ChainStore
    created: bool  # True: a new genesis; False: loaded from the store
    repaired: list[str] = field(default_factory=list)
    mempool_restored: int = 0
    mempool_refused: list[tuple[bytes, str]] = field(default_factory=list)


def open_chain(data_dir: str | Path, allocations: list[tuple[bytes, int]], miner_pubkey: bytes,
               limits: ChainLimits, genesis_time: float) -> Opened:
    """Load the chain stored in ``data_dir`` (its genesis must match ``allocations``),
    or make a new one; re-validate the stored mempool."""
    store = ChainStore(Path(data_dir) / STORE_FILE)
    try:
        return _open(store, allocations, miner_pubkey, limits, genesis_time)
    except BaseException:
        store.close()
        raise


def _open(store: ChainStore, allocations: list[tuple[bytes, int]], miner_pubkey: bytes,
          limits: ChainLimits, genesis_time: float) -> Opened:
    if store.is_empty():
        ledger = Ledger(store)
        ledger.genesis(allocations, genesis_time)
        opened = Opened(Chain(ledger, miner_pubkey, limits, store), store, created=True)
    else:
        store.check_genesis(genesis_coinbase(allocations).txid)
        snapshot = store.load()
        ledger = Ledger.restore(snapshot, store)
        opened = Opened(Chain(ledger, miner_pubkey, limits, store), store, created=False,
                        repaired=snapshot.repaired)
    rows = store.mempool_rows()
    with store.batch():
        store.mempool_clear()
        for raw in rows:
            try:
                tx = Tx.deserialize(raw)
            except DecodeError as exc:
                log.warning("stored mempool: dropped an unreadable tx: %s", exc)
                continue
            opened.mempool_refused.extend(opened.chain.readmit([tx]))
    opened.mempool_restored = len(opened.chain.mempool)
    return opened
