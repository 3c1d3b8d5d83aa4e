"""The on-chain wallet: keys derived from the node secret, UTXOs learned from blocks.

The wallet is pure bookkeeping: the chain follower feeds it every block in order,
and it builds and signs spends of its coins. Coins spent by a transaction we sent
are reserved until that transaction confirms (or is forgotten), so two sends never
pick the same coin.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator import identity, policy
from emulator.errors import LnemuError
from emulator.tx import OutPoint, Tx, TxIn, TxOut

DUST_LIMIT_SAT = 330
DEFAULT_FEERATE_SAT_PER_KB = 1_000


class WalletError(LnemuError):
    code = "wallet_error"


class InsufficientFunds(WalletError):
    code = "insufficient_funds"


@dataclass
class WalletCoin:
    outpoint: OutPoint
    amount_sat: int
    key_index: int
    height: int


@dataclass
class Wallet:
    """Keys and coins of one peer."""

    node_secret: bytes
    next_index: int = 1  # index 0 is the key the scenario funds at genesis
    coins: dict[OutPoint, WalletCoin] = field(default_factory=dict)
    reserved: dict[OutPoint, bytes] = field(default_factory=dict)  # coin -> spending txid
    pending: dict[bytes, int] = field(default_factory=dict)  # our unconfirmed txid -> sent sat
    _keys: dict[bytes, int] = field(default_factory=dict)  # pubkey -> index

    def __post_init__(self) -> None:
        for index in range(self.next_index):
            self._remember(index)

    def _remember(self, index: int) -> bytes:
        pub = identity.pubkey(identity.wallet_secret(self.node_secret, index))
        self._keys[pub] = index
        return pub

    def key(self, index: int = 0) -> bytes:
        """The public key of wallet key ``index``."""
        return identity.pubkey(identity.wallet_secret(self.node_secret, index))

    def new_address(self) -> bytes:
        """A fresh key to be paid to; lnemu addresses are 33-byte public keys."""
        pub = self._remember(self.next_index)
        self.next_index += 1
        return pub

    # --- learning from blocks ---------------------------------------------------
    def apply_block(self, height: int, txs: list[Tx]) -> list[bytes]:
        """Update coins from a block; return the txids of ours that confirmed."""
        confirmed = []
        for tx in txs:
            txid = tx.txid
            for txin in tx.inputs:
                self.coins.pop(txin.outpoint, None)
                self.reserved.pop(txin.outpoint, None)
            for vout, out in enumerate(tx.outputs):
                index = self._owner(out.cond)
                if index is not None:
                    op = OutPoint(txid, vout)
                    self.coins[op] = WalletCoin(op, out.amount_sat, index, height)
            if self.pending.pop(txid, None) is not None:
                confirmed.append(txid)
        return confirmed

    def _owner(self, cond: list) -> int | None:
        if len(cond) == 2 and cond[0] == "pk":
            return self._keys.get(cond[1])
        return None

    def forget(self) -> None:
        """Drop every coin (before rescanning the chain after a reorg)."""
        self.coins.clear()
        self.reserved.clear()

    # --- balances and spends ------------------------------------------------------
    def balance(self) -> dict[str, int]:
        confirmed = {op: c for op, c in self.coins.items() if c.height >= 0}
        spendable = sum(c.amount_sat for op, c in self.coins.items() if op not in self.reserved)
        reserved = sum(c.amount_sat for op, c in confirmed.items() if op in self.reserved)
        unconfirmed = sum(c.amount_sat for c in self.coins.values() if c.height < 0)
        return {"confirmed_sat": sum(c.amount_sat for c in confirmed.values()),
                "spendable_sat": spendable, "reserved_sat": reserved,
                "unconfirmed_sat": unconfirmed, "coins": len(confirmed)}

    def add_unconfirmed(self, tx: Tx) -> None:
        """Our own change from a tx we broadcast: spendable at once (the chain accepts a
        child of an unconfirmed parent); it counts as confirmed once a block has it."""
        for vout, out in enumerate(tx.outputs):
            index = self._owner(out.cond)
            op = OutPoint(tx.txid, vout)
            if index is not None and op not in self.coins:
                self.coins[op] = WalletCoin(op, out.amount_sat, index, -1)

    def release(self, tx: Tx) -> None:
        """Give back the coins reserved for a tx that will never be broadcast."""
        for txin in tx.inputs:
            if self.reserved.get(txin.outpoint) == tx.txid:
                del self.reserved[txin.outpoint]

    def build_payment(self, dest: list, amount_sat: int,
                      feerate_sat_per_kb: int = DEFAULT_FEERATE_SAT_PER_KB) -> Tx:
        """A signed transaction paying ``amount_sat`` to the policy ``dest``."""
        if type(amount_sat) is not int or amount_sat < DUST_LIMIT_SAT:
            raise WalletError(f"amount must be an int of at least {DUST_LIMIT_SAT} sat "
                              f"(the dust limit), got {amount_sat!r}")
        if feerate_sat_per_kb < 0:
            raise WalletError("fee rate must not be negative")
        available = sorted((c for op, c in self.coins.items() if op not in self.reserved),
                           key=lambda c: (c.height < 0, -c.amount_sat))  # confirmed first
        chosen: list[WalletCoin] = []
        for coin in available:
            chosen.append(coin)
            tx = self._assemble(chosen, dest, amount_sat, feerate_sat_per_kb)
            if tx is not None:
                return tx
        total = sum(c.amount_sat for c in available)
        raise InsufficientFunds(f"need {amount_sat} sat plus fee, have {total} sat spendable")

    def _assemble(self, coins: list[WalletCoin], dest: list, amount_sat: int,
                  feerate: int) -> Tx | None:
        total = sum(c.amount_sat for c in coins)
        change_key = self.key(0)
        # Size with a change output and signatures, then decide on change.
        draft = self._signed(coins, [TxOut(amount_sat, dest), TxOut(total, policy.pk(change_key))])
        fee = -(-draft.size * feerate // 1000)
        change = total - amount_sat - fee
        if change < 0:
            return None
        outputs = [TxOut(amount_sat, dest)]
        if change >= DUST_LIMIT_SAT:
            outputs.append(TxOut(change, policy.pk(change_key)))
        return self._signed(coins, outputs)

    def _signed(self, coins: list[WalletCoin], outputs: list[TxOut]) -> Tx:
        tx = Tx(inputs=[TxIn(c.outpoint.txid, c.outpoint.vout) for c in coins], outputs=outputs)
        witnesses = []
        for i, coin in enumerate(coins):
            secret = identity.wallet_secret(self.node_secret, coin.key_index)
            pub = identity.pubkey(secret)
            sig = tx.sign_input(i, secret, coin.amount_sat, policy.pk(pub))
            witnesses.append(policy.Witness(path=(), sigs={pub: sig}, preimages={}))
        tx.witnesses = witnesses
        return tx

    def reserve(self, tx: Tx) -> None:
        """Reserve the coins ``tx`` spends (a funding tx built before it is signed)."""
        for txin in tx.inputs:
            self.reserved[txin.outpoint] = tx.txid

    def mark_sent(self, tx: Tx, amount_sat: int) -> None:
        """Reserve the coins ``tx`` spends until it confirms."""
        for txin in tx.inputs:
            self.reserved[txin.outpoint] = tx.txid
        self.pending[tx.txid] = amount_sat
        self.add_unconfirmed(tx)

    def to_wire(self) -> dict[str, Any]:
        return {"next_index": self.next_index}
