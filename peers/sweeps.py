"""Sweeps: one-party spends of commitment and HTLC outputs into a wallet policy.

A :class:`SweepInput` says how to spend one output (branch path, signing keys,
preimages, sequence, least locktime); :func:`sweep_tx` gathers any number of them into
one signed transaction paying ``dest_cond`` at a fee rate in sat per 1,000 bytes of
lnemu's serialized size. :func:`justice_tx` is the penalty: every listed output of a
revoked commitment (or of the cheater's second-stage HTLC tx) through its revocation
branch. The constructors below give the input for each way of spending.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emulator.crypto.keys import pubkey_from_privkey
from emulator.errors import LnemuError
from emulator.policy import Witness, revocation_branch_path
from emulator.tx import DEFAULT_SEQUENCE, OutPoint, Tx, TxIn, TxOut
from peers.scripts import (
    OFFERED_PREIMAGE_PATH,
    RECEIVED_TIMEOUT_PATH,
    TO_LOCAL_DELAYED_PATH,
    revocation_pubkey_of,
)

# The chain refuses outputs below this (l1chain's DUST_LIMIT_SAT, BOLT 3's P2WSH dust).
CHAIN_DUST_LIMIT_SAT = 330
_PLACEHOLDER_SIG = b"\x01" * 64  # signatures are always 64 bytes, so sizes are exact


class SweepError(LnemuError):
    """A sweep that cannot be built: nothing to spend, a wrong output, or dust left."""

    code = "sweep_error"


@dataclass(frozen=True)
class SweepInput:
    """How to spend one output alone: its branch, the keys that sign, and timelocks."""

    outpoint: OutPoint
    amount_sat: int
    cond: list
    path: tuple[int, ...]
    privkeys: tuple[bytes, ...]
    preimages: dict[bytes, bytes] = field(default_factory=dict)  # hash -> preimage
    sequence: int = DEFAULT_SEQUENCE  # to_self_delay for a delayed branch
    locktime: int = 0  # the least tx locktime the branch needs (after(h))

    def witness(self, tx: Tx, index: int) -> Witness:
        """The witness of this input as input ``index`` of ``tx``."""
        sigs = {
            pubkey_from_privkey(key): tx.sign_input(index, key, self.amount_sat, self.cond)
            for key in self.privkeys
        }
        return Witness(self.path, sigs, self.preimages)

    def placeholder_witness(self) -> Witness:
        """A witness of the real one's size, for fee estimates."""
        sigs = {pubkey_from_privkey(key): _PLACEHOLDER_SIG for key in self.privkeys}
        return Witness(self.path, sigs, self.preimages)


def delayed_input(
    outpoint: OutPoint, amount_sat: int, cond: list, delayed_privkey: bytes, to_self_delay: int
) -> SweepInput:
    """The holder's ``to_local`` or second-stage output, after ``to_self_delay`` blocks."""
    return SweepInput(outpoint, amount_sat, cond, TO_LOCAL_DELAYED_PATH, (delayed_privkey,),
                      sequence=to_self_delay)


def revocation_input(
    outpoint: OutPoint, amount_sat: int, cond: list, revocation_privkey: bytes
) -> SweepInput:
    """Any output with a revocation branch, spent through it (a penalty)."""
    path = revocation_branch_path(cond)
    if path is None:
        raise SweepError(f"output {outpoint} has no revocation branch")
    return SweepInput(outpoint, amount_sat, cond, path, (revocation_privkey,))


def to_remote_input(
    outpoint: OutPoint, amount_sat: int, cond: list, payment_privkey: bytes
) -> SweepInput:
    """Our ``to_remote`` output on the counterparty's commitment (spendable at once)."""
    return SweepInput(outpoint, amount_sat, cond, (), (payment_privkey,))


def offered_preimage_input(
    outpoint: OutPoint, amount_sat: int, cond: list, remote_htlc_privkey: bytes,
    payment_hash: bytes, preimage: bytes,
) -> SweepInput:
    """An HTLC the commitment's holder offered us, claimed with its preimage."""
    return SweepInput(outpoint, amount_sat, cond, OFFERED_PREIMAGE_PATH, (remote_htlc_privkey,),
                      preimages={payment_hash: preimage})


def received_timeout_input(
    outpoint: OutPoint, amount_sat: int, cond: list, remote_htlc_privkey: bytes, cltv_expiry: int
) -> SweepInput:
    """An HTLC we offered, reclaimed from the holder's commitment once it expired."""
    # after(h) needs a non-final sequence so that the tx's locktime is enforced (BIP 65).
    return SweepInput(outpoint, amount_sat, cond, RECEIVED_TIMEOUT_PATH, (remote_htlc_privkey,),
                      sequence=DEFAULT_SEQUENCE, locktime=cltv_expiry)


def _fee_sat(feerate_sat_per_kb: int, size: int) -> int:
    return -(-feerate_sat_per_kb * size // 1000)  # rounded up: never below the rate asked


def sweep_tx(
    inputs: list[SweepInput], dest_cond: list, feerate_sat_per_kb: int,
    dust_limit_sat: int = CHAIN_DUST_LIMIT_SAT,
) -> Tx:
    """One signed tx spending every input to ``dest_cond``, paying the fee from the total."""
    if not inputs:
        raise SweepError("a sweep needs at least one input")
    if feerate_sat_per_kb < 0:
        raise SweepError(f"fee rate {feerate_sat_per_kb} is negative")
    total_sat = sum(inp.amount_sat for inp in inputs)
    txins = [TxIn(inp.outpoint.txid, inp.outpoint.vout, inp.sequence) for inp in inputs]
    locktime = max(inp.locktime for inp in inputs)
    # Size with the largest amount: the real (smaller) amount never packs longer.
    draft = Tx(txins, [TxOut(total_sat, dest_cond)], locktime, 2,
               [inp.placeholder_witness() for inp in inputs])
    amount_sat = total_sat - _fee_sat(feerate_sat_per_kb, draft.size)
    if amount_sat < dust_limit_sat:
        raise SweepError(f"sweeping {total_sat} sat leaves {amount_sat} sat after fees, "
                         f"below the dust limit of {dust_limit_sat}")
    tx = Tx(txins, [TxOut(amount_sat, dest_cond)], locktime, 2)
    tx.witnesses = [inp.witness(tx, i) for i, inp in enumerate(inputs)]
    return tx


def justice_tx(
    commit_tx: Tx, outputs: list[tuple[int, int, list]], revocation_privkey: bytes,
    dest_cond: list, feerate_sat_per_kb: int,
) -> Tx:
    """One tx sweeping each (vout, amount_sat, cond) of ``commit_tx`` by its revocation branch.

    ``commit_tx`` is whatever tx holds the outputs: a revoked commitment or a
    second-stage HTLC tx the cheater got confirmed.
    """
    inputs = []
    for vout, amount_sat, cond in outputs:
        spent = commit_tx.outputs[vout] if 0 <= vout < len(commit_tx.outputs) else None
        if spent is None or spent.amount_sat != amount_sat or spent.cond != cond:
            raise SweepError(f"output {vout} of {commit_tx.txid_hex} is not {amount_sat} sat "
                             "under the given policy")
        outpoint = OutPoint(commit_tx.txid, vout)
        inputs.append(revocation_input(outpoint, amount_sat, cond, revocation_privkey))
    return sweep_tx(inputs, dest_cond, feerate_sat_per_kb)


def revocable_outputs(tx: Tx, revocation_pubkey: bytes) -> list[tuple[int, int, list]]:
    """The (vout, amount_sat, cond) of ``tx`` that ``revocation_pubkey`` can sweep at once."""
    return [
        (vout, out.amount_sat, out.cond)
        for vout, out in enumerate(tx.outputs)
        if revocation_pubkey_of(out.cond) == revocation_pubkey
    ]
