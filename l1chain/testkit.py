"""Helpers to build chains and signed spends in tests and benchmarks (not used by the process)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from emulator import identity, policy
from emulator.tx import DEFAULT_SEQUENCE, OutPoint, Tx, TxIn, TxOut
from l1chain.chain import Chain, ChainLimits
from l1chain.ledger import Archive, Ledger


@dataclass(frozen=True)
class Key:
    """A test key pair."""

    secret: bytes
    pub: bytes

    @classmethod
    def named(cls, name: str) -> Key:
        """A key derived from ``name`` (the same in every run)."""
        secret = identity.node_secret("l1chain-test", name)
        return cls(secret, identity.pubkey(secret))

    @property
    def cond(self) -> list:
        """``pk(this key)``."""
        return policy.pk(self.pub)


@dataclass(frozen=True)
class Prevout:
    """An output to spend: where it is, its amount and its policy."""

    outpoint: OutPoint
    amount_sat: int
    cond: list

    @classmethod
    def of(cls, tx: Tx, vout: int) -> Prevout:
        """Output ``vout`` of ``tx``."""
        out = tx.outputs[vout]
        return cls(OutPoint(tx.txid, vout), out.amount_sat, out.cond)


def sign_tx(tx: Tx, prevouts: list[Prevout], signers: list[list[Key]],
            paths: list[tuple[int, ...]] | None = None,
            preimages: list[dict[bytes, bytes]] | None = None) -> Tx:
    """Give ``tx`` one witness per input: signatures by ``signers[i]``, path and preimages."""
    witnesses = []
    for i, (prev, keys) in enumerate(zip(prevouts, signers, strict=True)):
        sigs = {k.pub: tx.sign_input(i, k.secret, prev.amount_sat, prev.cond) for k in keys}
        witnesses.append(policy.Witness(path=paths[i] if paths else (), sigs=sigs,
                                        preimages=preimages[i] if preimages else {}))
    tx.witnesses = witnesses
    return tx


def spend(prevouts: list[Prevout], outputs: list[TxOut], signers: list[list[Key]],
          paths: list[tuple[int, ...]] | None = None, sequence: int = DEFAULT_SEQUENCE,
          locktime: int = 0, preimages: list[dict[bytes, bytes]] | None = None) -> Tx:
    """A signed transaction spending ``prevouts`` to ``outputs``."""
    tx = Tx([TxIn(p.outpoint.txid, p.outpoint.vout, sequence) for p in prevouts], outputs,
            locktime)
    return sign_tx(tx, prevouts, signers, paths, preimages)


def pay(prev: Prevout, key: Key, amounts_sat: list[int], to: list | None = None) -> Tx:
    """Spend a ``pk(key)`` output to outputs of ``amounts_sat`` locked by ``to`` (default:
    ``pk(key)``); the fee is whatever the outputs leave."""
    cond = to if to is not None else key.cond
    return spend([prev], [TxOut(a, cond) for a in amounts_sat], [[key]])


def preimage_of(label: str) -> tuple[bytes, bytes]:
    """A 32-byte preimage and its SHA-256."""
    preimage = hashlib.sha256(label.encode()).digest()
    return preimage, hashlib.sha256(preimage).digest()


def new_chain(allocations: list[tuple[Key, int]], miner: Key | None = None,
              limits: ChainLimits | None = None, archive: Archive | None = None) -> Chain:
    """A chain (in memory unless ``archive`` is given) whose genesis pays ``allocations``."""
    ledger = Ledger(archive)
    ledger.genesis([(key.pub, amount) for key, amount in allocations], 0.0)
    return Chain(ledger, (miner or Key.named("miner")).pub, limits)


def genesis_prevouts(chain: Chain) -> list[Prevout]:
    """The outputs of the genesis transaction."""
    return [Prevout.of(chain.ledger.block(0).txs[0], i)
            for i in range(len(chain.ledger.block(0).txs[0].outputs))]
