"""BOLT 3 commitment transactions and their second-stage HTLC transactions.

:func:`build_commitment` turns a :class:`CommitmentSpec` (balances, HTLCs, fee rate, dust
limit and keys of one side's commitment) into the unsigned transaction: the opener pays
the base fee, dust outputs and trimmed HTLCs go to fees, outputs are sorted as BIP 69
would sort them, and the obscured commitment number sits in locktime and sequence.
:func:`second_stage_txs` gives the HTLC-timeout/HTLC-success transactions whose
signatures ``commitment_signed`` carries. Everything is pure: no I/O, no state.

Output policies and witnesses live in :mod:`peers.scripts`, keys in
:mod:`peers.channel_keys`, sweeps and justice in :mod:`peers.sweeps`; this module
re-exports their names, so ``from peers.commitment import ...`` finds the whole API.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from emulator.errors import LnemuError
from emulator.policy import packed_policy, verify
from emulator.tx import OutPoint, Tx, TxIn, TxOut, sighash
from peers.channel_keys import (  # noqa: F401  (re-exported)
    Basepoints,
    BaseSecrets,
    ChannelKeyError,
    CommitmentKeys,
    commitment_keys,
)
from peers.scripts import (  # noqa: F401  (re-exported)
    delayed_witness,
    funding_policy,
    funding_witness,
    htlc_success_witness,
    htlc_timeout_witness,
    offered_htlc_policy,
    offered_preimage_witness,
    received_htlc_policy,
    received_timeout_witness,
    revocation_witness,
    to_local_policy,
    to_remote_policy,
    to_remote_witness,
)
from peers.sweeps import (  # noqa: F401  (re-exported)
    SweepError,
    SweepInput,
    delayed_input,
    justice_tx,
    offered_preimage_input,
    received_timeout_input,
    revocable_outputs,
    revocation_input,
    sweep_tx,
    to_remote_input,
)

# BOLT 3 "expected weights" of non-anchor channels.
COMMITMENT_BASE_WEIGHT = 724
HTLC_OUTPUT_WEIGHT = 172
HTLC_TIMEOUT_WEIGHT = 663
HTLC_SUCCESS_WEIGHT = 703

COMMITMENT_NUMBER_BITS = 48
MAX_COMMITMENT_NUMBER = (1 << COMMITMENT_NUMBER_BITS) - 1
_LOW24 = 0xFFFFFF
LOCKTIME_MARKER = 0x20 << 24  # BOLT 3: upper 8 bits of a commitment's locktime
SEQUENCE_MARKER = 0x80 << 24  # BOLT 3: upper 8 bits of a commitment input's sequence
SECOND_STAGE_SEQUENCE = 0


class CommitmentError(LnemuError):
    """A commitment or HTLC transaction that cannot be built or read as asked."""

    code = "commitment_error"


class CommitmentSpecError(CommitmentError):
    """A commitment spec that does not add up (balances vs funding, duplicate HTLCs...)."""

    code = "bad_commitment_spec"


class NotACommitment(CommitmentError):
    """A transaction without the shape of a BOLT 3 commitment (one input, marked fields)."""

    code = "not_a_commitment"


# --- fees -----------------------------------------------------------------------------


def commitment_fee_sat(feerate_per_kw: int, untrimmed_htlcs: int) -> int:
    """BOLT 3 base fee of a commitment with ``untrimmed_htlcs`` HTLC outputs."""
    return feerate_per_kw * (COMMITMENT_BASE_WEIGHT + HTLC_OUTPUT_WEIGHT * untrimmed_htlcs) // 1000


def htlc_timeout_fee_sat(feerate_per_kw: int) -> int:
    """BOLT 3 fee of an HTLC-timeout transaction."""
    return feerate_per_kw * HTLC_TIMEOUT_WEIGHT // 1000


def htlc_success_fee_sat(feerate_per_kw: int) -> int:
    """BOLT 3 fee of an HTLC-success transaction."""
    return feerate_per_kw * HTLC_SUCCESS_WEIGHT // 1000


# --- obscured commitment number -------------------------------------------------------


def obscuring_factor(opener_payment_basepoint: bytes, acceptor_payment_basepoint: bytes) -> int:
    """Lower 48 bits of SHA256(opener's payment_basepoint || acceptor's payment_basepoint)."""
    digest = hashlib.sha256(opener_payment_basepoint + acceptor_payment_basepoint).digest()
    return int.from_bytes(digest[-6:], "big")


def commitment_locktime_sequence(commitment_number: int, factor: int) -> tuple[int, int]:
    """BOLT 3 (locktime, sequence) carrying ``commitment_number`` obscured by ``factor``."""
    if not 0 <= commitment_number <= MAX_COMMITMENT_NUMBER:
        raise CommitmentSpecError(f"commitment number {commitment_number} is not a 48-bit number")
    obscured = (commitment_number ^ factor) & MAX_COMMITMENT_NUMBER
    return LOCKTIME_MARKER | (obscured & _LOW24), SEQUENCE_MARKER | (obscured >> 24)


def commitment_number_from_tx(tx: Tx, factor: int) -> int:
    """Read the commitment number out of a commitment tx's locktime and sequence."""
    if len(tx.inputs) != 1:
        raise NotACommitment(f"a commitment has one input, this tx has {len(tx.inputs)}")
    sequence = tx.inputs[0].sequence
    if tx.locktime >> 24 != LOCKTIME_MARKER >> 24 or sequence >> 24 != SEQUENCE_MARKER >> 24:
        raise NotACommitment("locktime/sequence lack the BOLT 3 markers 0x20/0x80")
    obscured = (sequence & _LOW24) << 24 | tx.locktime & _LOW24
    return (obscured ^ factor) & MAX_COMMITMENT_NUMBER


# --- the commitment -------------------------------------------------------------------


@dataclass(frozen=True)
class HtlcView:
    """An HTLC as one commitment sees it; ``offered`` is from the holder's side."""

    htlc_id: int
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int
    offered: bool


@dataclass(frozen=True)
class CommitmentSpec:
    """Everything that decides one side's (the holder's) commitment transaction."""

    funding_outpoint: OutPoint
    funding_sat: int
    funding_cond: list
    commitment_number: int
    obscuring_factor: int
    holder_is_opener: bool
    to_local_msat: int  # holder's balance before the fee
    to_remote_msat: int  # counterparty's balance before the fee
    htlcs: tuple[HtlcView, ...]
    feerate_per_kw: int
    dust_limit_sat: int  # the holder's
    to_self_delay: int  # on the holder's outputs, chosen by the counterparty
    keys: CommitmentKeys


@dataclass(frozen=True)
class HtlcOutput:
    """An untrimmed HTLC's output on a built commitment."""

    htlc_id: int
    vout: int
    amount_sat: int
    cond: list
    offered: bool
    cltv_expiry: int
    payment_hash: bytes


@dataclass
class BuiltCommitment:
    """An unsigned commitment tx and where everything went.

    In msat, ``(sum of outputs + fee_sat) * 1000 + trimmed_msat == funding_sat * 1000``:
    ``trimmed_msat`` holds the trimmed HTLCs, dust balances and sub-satoshi remainders,
    all of which the chain sees as fee. An omitted balance output has vout None and 0 sat.
    """

    tx: Tx
    funding_sat: int
    fee_sat: int  # the base fee the opener paid (capped at its balance)
    to_local_vout: int | None
    to_local_sat: int
    to_remote_vout: int | None
    to_remote_sat: int
    htlc_outputs: list[HtlcOutput]  # untrimmed, in vout order
    trimmed: list[int]  # htlc ids (see trimmed_htlcs: offered and received ids may clash)
    trimmed_msat: int
    trimmed_htlcs: list[HtlcView] = field(default_factory=list)

    @property
    def txid(self) -> bytes:
        """The commitment's txid (witnesses do not change it)."""
        return self.tx.txid

    @property
    def onchain_fee_sat(self) -> int:
        """What the chain sees as fee: funding minus all outputs."""
        return self.funding_sat - sum(out.amount_sat for out in self.tx.outputs)

    def htlc_output(self, offered: bool, htlc_id: int) -> HtlcOutput | None:
        """The output of HTLC ``htlc_id`` offered (or received) by the holder, if untrimmed."""
        for out in self.htlc_outputs:
            if out.offered == offered and out.htlc_id == htlc_id:
                return out
        return None


def htlc_is_trimmed(htlc: HtlcView, feerate_per_kw: int, dust_limit_sat: int) -> bool:
    """BOLT 3: trimmed if its amount minus its second-stage fee is below the dust limit."""
    fee_of = htlc_timeout_fee_sat if htlc.offered else htlc_success_fee_sat
    second_stage_fee = fee_of(feerate_per_kw)
    return htlc.amount_msat // 1000 < dust_limit_sat + second_stage_fee


def _check_spec(spec: CommitmentSpec) -> None:
    """Raise CommitmentSpecError unless the spec's amounts and HTLCs are consistent."""
    amounts = [spec.to_local_msat, spec.to_remote_msat, *(h.amount_msat for h in spec.htlcs)]
    if spec.funding_sat <= 0 or any(amount < 0 for amount in amounts):
        raise CommitmentSpecError("funding must be positive, balances and HTLCs not negative")
    if sum(amounts) != spec.funding_sat * 1000:
        raise CommitmentSpecError(
            f"balances and HTLCs sum to {sum(amounts)} msat, "
            f"funding is {spec.funding_sat * 1000} msat"
        )
    if spec.feerate_per_kw < 0 or spec.dust_limit_sat < 0:
        raise CommitmentSpecError("feerate and dust limit must not be negative")
    ids = {(h.offered, h.htlc_id) for h in spec.htlcs}
    if len(ids) != len(spec.htlcs):
        raise CommitmentSpecError("two HTLCs in one direction share an htlc_id")


def _balances_after_fee(spec: CommitmentSpec, fee_sat: int) -> tuple[int, int, int]:
    """(fee actually paid, holder msat, counterparty msat) once the opener paid the fee."""
    opener_msat = spec.to_local_msat if spec.holder_is_opener else spec.to_remote_msat
    # BOLT 3 "Fee Payment": an opener that cannot pay the whole fee gives all it has.
    paid_sat = min(fee_sat, opener_msat // 1000)
    paid_msat = min(fee_sat * 1000, opener_msat)
    if spec.holder_is_opener:
        return paid_sat, spec.to_local_msat - paid_msat, spec.to_remote_msat
    return paid_sat, spec.to_local_msat, spec.to_remote_msat - paid_msat


@dataclass(frozen=True)
class _Entry:
    """One output before sorting; ``htlc`` is None for to_local/to_remote."""

    amount_sat: int
    cond: list
    kind: str  # "to_local", "to_remote" or "htlc"
    htlc: HtlcView | None = None

    def sort_key(self) -> tuple:
        """BIP 69 order plus the tie-breaks below."""
        # BIP 69 (amount, then script), then BOLT 3's CLTV tie-break for identical HTLC
        # outputs; the direction and id settle any tie left, the same way on both sides.
        htlc = self.htlc
        tail = (htlc.cltv_expiry, htlc.offered, htlc.htlc_id) if htlc else (0, False, -1)
        return (self.amount_sat, packed_policy(self.cond), *tail)


def _htlc_entry(spec: CommitmentSpec, htlc: HtlcView) -> _Entry:
    if htlc.offered:
        cond = offered_htlc_policy(spec.keys, htlc.payment_hash)
    else:
        cond = received_htlc_policy(spec.keys, htlc.payment_hash, htlc.cltv_expiry)
    return _Entry(htlc.amount_msat // 1000, cond, "htlc", htlc)


def _balance_entries(spec: CommitmentSpec, local_msat: int, remote_msat: int) -> list[_Entry]:
    entries = []
    if local_msat // 1000 >= spec.dust_limit_sat:
        entries.append(_Entry(local_msat // 1000, holder_delayed_policy(spec), "to_local"))
    if remote_msat // 1000 >= spec.dust_limit_sat:
        cond = to_remote_policy(spec.keys.to_remote_pubkey)
        entries.append(_Entry(remote_msat // 1000, cond, "to_remote"))
    return entries


def build_commitment(spec: CommitmentSpec) -> BuiltCommitment:
    """The holder's unsigned commitment transaction for ``spec`` (BOLT 3 construction)."""
    _check_spec(spec)
    is_trimmed = [htlc_is_trimmed(h, spec.feerate_per_kw, spec.dust_limit_sat) for h in spec.htlcs]
    trimmed = [h for h, cut in zip(spec.htlcs, is_trimmed, strict=True) if cut]
    untrimmed = [h for h, cut in zip(spec.htlcs, is_trimmed, strict=True) if not cut]
    base_fee_sat = commitment_fee_sat(spec.feerate_per_kw, len(untrimmed))
    fee_sat, local_msat, remote_msat = _balances_after_fee(spec, base_fee_sat)
    entries = _balance_entries(spec, local_msat, remote_msat)
    entries += [_htlc_entry(spec, htlc) for htlc in untrimmed]
    entries.sort(key=_Entry.sort_key)
    locktime, sequence = commitment_locktime_sequence(spec.commitment_number, spec.obscuring_factor)
    txin = TxIn(spec.funding_outpoint.txid, spec.funding_outpoint.vout, sequence)
    tx = Tx([txin], [TxOut(e.amount_sat, e.cond) for e in entries], locktime=locktime, version=2)
    built = BuiltCommitment(
        tx=tx, funding_sat=spec.funding_sat, fee_sat=fee_sat,
        to_local_vout=None, to_local_sat=0, to_remote_vout=None, to_remote_sat=0,
        htlc_outputs=[], trimmed=[h.htlc_id for h in trimmed], trimmed_msat=0,
        trimmed_htlcs=trimmed,
    )
    for vout, entry in enumerate(entries):
        _record(built, vout, entry)
    outputs_sat = sum(e.amount_sat for e in entries)
    built.trimmed_msat = (spec.funding_sat - outputs_sat - fee_sat) * 1000
    return built


def _record(built: BuiltCommitment, vout: int, entry: _Entry) -> None:
    """Note where ``entry`` landed in ``built``."""
    if entry.kind == "to_local":
        built.to_local_vout, built.to_local_sat = vout, entry.amount_sat
    elif entry.kind == "to_remote":
        built.to_remote_vout, built.to_remote_sat = vout, entry.amount_sat
    else:
        htlc = entry.htlc
        assert htlc is not None
        built.htlc_outputs.append(HtlcOutput(
            htlc.htlc_id, vout, entry.amount_sat, entry.cond, htlc.offered,
            htlc.cltv_expiry, htlc.payment_hash,
        ))


# --- second-stage HTLC transactions ---------------------------------------------------


def holder_delayed_policy(spec: CommitmentSpec) -> list:
    """The holder's ``to_local`` and second-stage outputs' policy: revocation | delayed."""
    keys = spec.keys
    return to_local_policy(keys.revocation_pubkey, keys.local_delayed_pubkey, spec.to_self_delay)


def _second_stage(commit: BuiltCommitment, out: HtlcOutput, spec: CommitmentSpec,
                  offered: bool, shared: tuple[bytes, list] | None = None) -> Tx:
    """The tx spending ``out``; ``shared`` is (commitment txid, output policy) if known."""
    kind = "HTLC-timeout" if offered else "HTLC-success"
    if out.offered != offered:
        raise CommitmentError(f"{kind} tx spends {'an offered' if offered else 'a received'} "
                              f"HTLC output; htlc {out.htlc_id} is not one")
    spent = commit.tx.outputs[out.vout] if out.vout < len(commit.tx.outputs) else None
    if spent is None or spent.cond != out.cond or spent.amount_sat != out.amount_sat:
        raise CommitmentError(f"htlc {out.htlc_id} is not output {out.vout} of this commitment")
    fee_sat = (htlc_timeout_fee_sat if offered else htlc_success_fee_sat)(spec.feerate_per_kw)
    commit_txid, dest_cond = shared or (commit.tx.txid, holder_delayed_policy(spec))
    txin = TxIn(commit_txid, out.vout, SECOND_STAGE_SEQUENCE)
    output = TxOut(out.amount_sat - fee_sat, dest_cond)
    locktime = out.cltv_expiry if offered else 0
    return Tx([txin], [output], locktime=locktime, version=2)


def htlc_timeout_tx(commit: BuiltCommitment, out: HtlcOutput, spec: CommitmentSpec) -> Tx:
    """The holder's HTLC-timeout tx for an offered output (locktime = cltv_expiry)."""
    return _second_stage(commit, out, spec, offered=True)


def htlc_success_tx(commit: BuiltCommitment, out: HtlcOutput, spec: CommitmentSpec) -> Tx:
    """The holder's HTLC-success tx for a received output (needs the preimage to spend)."""
    return _second_stage(commit, out, spec, offered=False)


def second_stage_tx(commit: BuiltCommitment, out: HtlcOutput, spec: CommitmentSpec) -> Tx:
    """The HTLC-timeout or HTLC-success tx of ``out``, whichever its direction needs."""
    return _second_stage(commit, out, spec, offered=out.offered)


def second_stage_txs(commit: BuiltCommitment, spec: CommitmentSpec) -> list[Tx]:
    """One second-stage tx per untrimmed HTLC, in vout order (``htlc_signatures`` order)."""
    # One txid and one policy for all: hashing the commitment per HTLC would be quadratic.
    shared = (commit.tx.txid, holder_delayed_policy(spec))
    return [_second_stage(commit, out, spec, out.offered, shared) for out in commit.htlc_outputs]


# --- signing and checking signatures --------------------------------------------------


def with_witnesses(tx: Tx, witnesses: list) -> Tx:
    """A copy of ``tx`` carrying ``witnesses`` (one per input); the txid is unchanged."""
    if len(witnesses) != len(tx.inputs):
        raise CommitmentError(f"{len(witnesses)} witnesses for {len(tx.inputs)} inputs")
    return Tx(list(tx.inputs), list(tx.outputs), tx.locktime, tx.version, list(witnesses))


def sign_commitment(tx: Tx, spec: CommitmentSpec, funding_privkey: bytes) -> bytes:
    """A funding-key signature of a commitment (or closing) tx spending ``spec``'s funding."""
    return tx.sign_input(0, funding_privkey, spec.funding_sat, spec.funding_cond)


def commitment_signature_valid(tx: Tx, spec: CommitmentSpec, pubkey: bytes, sig: bytes) -> bool:
    """True if ``sig`` is ``pubkey``'s valid funding signature of ``tx``."""
    return verify(pubkey, sighash(tx, 0, spec.funding_sat, spec.funding_cond), sig)


def finalize_commitment(tx: Tx, pub_a: bytes, sig_a: bytes, pub_b: bytes, sig_b: bytes) -> Tx:
    """The commitment with both funding signatures, ready to broadcast."""
    return with_witnesses(tx, [funding_witness(pub_a, sig_a, pub_b, sig_b)])


def sign_second_stage(tx: Tx, out: HtlcOutput, htlc_privkey: bytes) -> bytes:
    """An HTLC-key signature of the second-stage tx spending ``out``."""
    return tx.sign_input(0, htlc_privkey, out.amount_sat, out.cond)


def sign_htlc_txs(
    commit: BuiltCommitment, spec: CommitmentSpec, htlc_privkey: bytes
) -> list[bytes]:
    """Signatures of every second-stage tx, in vout order (``commitment_signed``'s list)."""
    pairs = zip(second_stage_txs(commit, spec), commit.htlc_outputs, strict=True)
    return [sign_second_stage(tx, out, htlc_privkey) for tx, out in pairs]


def htlc_signatures_valid(
    commit: BuiltCommitment, spec: CommitmentSpec, pubkey: bytes, sigs: list[bytes]
) -> bool:
    """True if ``sigs`` are ``pubkey``'s signatures of every second-stage tx, in order."""
    if len(sigs) != len(commit.htlc_outputs):
        return False
    txs = second_stage_txs(commit, spec)
    return all(
        verify(pubkey, sighash(tx, 0, out.amount_sat, out.cond), sig)
        for tx, out, sig in zip(txs, commit.htlc_outputs, sigs, strict=True)
    )


def finalize_htlc_timeout(tx: Tx, keys: CommitmentKeys, local_sig: bytes, remote_sig: bytes) -> Tx:
    """The HTLC-timeout tx with both HTLC signatures."""
    return with_witnesses(tx, [htlc_timeout_witness(keys, local_sig, remote_sig)])


def finalize_htlc_success(
    tx: Tx, keys: CommitmentKeys, local_sig: bytes, remote_sig: bytes,
    payment_hash: bytes, preimage: bytes,
) -> Tx:
    """The HTLC-success tx with both HTLC signatures and the preimage."""
    witness = htlc_success_witness(keys, local_sig, remote_sig, payment_hash, preimage)
    return with_witnesses(tx, [witness])
