"""BOLT 3 commitments on lnemu's chain rules: amounts, fees, trimming, order, every spend path."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import msgpack
import pytest

from emulator.crypto.keys import pubkey_from_privkey
from emulator.crypto.shachain import generate_from_seed, index_for_commitment
from emulator.policy import Witness, pk
from emulator.tx import OutPoint, Tx, TxIn, TxOut, is_final
from l1chain.errors import RejectReason, TxRejected
from l1chain.rules import Coin, check_tx
from peers import commitment as cm

ALICE = cm.BaseSecrets.derive(hashlib.sha256(b"alice").digest(), 0)  # opener, holder below
BOB = cm.BaseSecrets.derive(hashlib.sha256(b"bob").digest(), 0)
COMMITMENT_NUMBER = 42
FUNDING_SAT = 100_000
FUNDING_HEIGHT = 100
CONFIRM_HEIGHT = 200  # where the commitment confirms
TO_SELF_DELAY = 20
FEERATE_PER_KW = 5000  # BOLT 3's fee example: timeout fee 3315, success fee 3515
DUST_LIMIT_SAT = 546
DEST = pk(pubkey_from_privkey(hashlib.sha256(b"bob wallet").digest()))


def _hash(preimage: bytes) -> bytes:
    return hashlib.sha256(preimage).digest()


PREIMAGES = {name: bytes([i + 1]) * 32
             for i, name in enumerate(["off", "off_dust", "rcv", "rcv_dust"])}
# Offered and received ids both start at 0: ids are per direction.
HTLCS = (
    cm.HtlcView(0, 5_000_123, _hash(PREIMAGES["off"]), 300, offered=True),
    cm.HtlcView(1, 1_000_000, _hash(PREIMAGES["off_dust"]), 301, offered=True),
    cm.HtlcView(0, 7_000_456, _hash(PREIMAGES["rcv"]), 310, offered=False),
    cm.HtlcView(1, 800_000, _hash(PREIMAGES["rcv_dust"]), 311, offered=False),
)
TO_LOCAL_MSAT = 55_000_000
TO_REMOTE_MSAT = FUNDING_SAT * 1000 - TO_LOCAL_MSAT - sum(h.amount_msat for h in HTLCS)


class View:
    """A UTXO set for l1chain's validation rules (coins made by hand, as at genesis)."""

    def __init__(self) -> None:
        self.coins: dict[OutPoint, Coin] = {}

    def coin(self, outpoint: OutPoint) -> Coin | None:
        return self.coins.get(outpoint)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        return None

    def add(self, outpoint: OutPoint, txout: TxOut, height: int) -> None:
        self.coins[outpoint] = Coin(outpoint, txout, height)

    def confirm(self, tx: Tx, height: int):
        """Validate ``tx`` in a block at ``height`` and apply it."""
        verdict = check_tx(tx, height, self)
        for txin in tx.inputs:
            del self.coins[txin.outpoint]
        for vout, out in enumerate(tx.outputs):
            self.add(OutPoint(tx.txid, vout), out, height)
        return verdict


def rejection(tx: Tx, height: int, view: View) -> TxRejected:
    with pytest.raises(TxRejected) as info:
        check_tx(tx, height, view)
    return info.value


def assert_policy_failure(tx: Tx, height: int, view: View, reason: str, blocks: int | None = None):
    err = rejection(tx, height, view)
    assert err.reason == RejectReason.POLICY, err
    assert err.details["policy_reason"] == reason, err
    assert err.details.get("blocks_needed") == blocks


@dataclass
class Channel:
    spec: cm.CommitmentSpec
    commit: cm.BuiltCommitment
    signed: Tx
    view: View  # funding coin only; call confirm_commitment() to put the commitment on chain

    def confirm_commitment(self) -> None:
        self.view.confirm(self.signed, CONFIRM_HEIGHT)

    def outpoint(self, vout: int) -> OutPoint:
        return OutPoint(self.commit.txid, vout)


def make_spec(**changes) -> cm.CommitmentSpec:
    """Alice's commitment 42: she opened the channel, Bob set her to_self_delay."""
    a, b = ALICE.basepoints(), BOB.basepoints()
    point = ALICE.per_commitment_point(COMMITMENT_NUMBER)
    spec = cm.CommitmentSpec(
        funding_outpoint=OutPoint(hashlib.sha256(b"funding tx").digest(), 0),
        funding_sat=FUNDING_SAT,
        funding_cond=cm.funding_policy(a.funding_pubkey, b.funding_pubkey),
        commitment_number=COMMITMENT_NUMBER,
        obscuring_factor=cm.obscuring_factor(a.payment_basepoint, b.payment_basepoint),
        holder_is_opener=True,
        to_local_msat=TO_LOCAL_MSAT,
        to_remote_msat=TO_REMOTE_MSAT,
        htlcs=HTLCS,
        feerate_per_kw=FEERATE_PER_KW,
        dust_limit_sat=DUST_LIMIT_SAT,
        to_self_delay=TO_SELF_DELAY,
        keys=cm.commitment_keys(point, a, b),
    )
    return replace(spec, **changes)


@pytest.fixture
def channel() -> Channel:
    spec = make_spec()
    commit = cm.build_commitment(spec)
    a_sig = cm.sign_commitment(commit.tx, spec, ALICE.funding_privkey)
    b_sig = cm.sign_commitment(commit.tx, spec, BOB.funding_privkey)
    a, b = ALICE.basepoints(), BOB.basepoints()
    signed = cm.finalize_commitment(commit.tx, a.funding_pubkey, a_sig, b.funding_pubkey, b_sig)
    view = View()
    view.add(spec.funding_outpoint, TxOut(FUNDING_SAT, spec.funding_cond), FUNDING_HEIGHT)
    return Channel(spec, commit, signed, view)


def point() -> bytes:
    return ALICE.per_commitment_point(COMMITMENT_NUMBER)


def revocation_privkey() -> bytes:
    """What Bob can compute once Alice revoked commitment 42."""
    return BOB.revocation_privkey(ALICE.per_commitment_secret(COMMITMENT_NUMBER))


# --- keys -----------------------------------------------------------------------------


def test_base_secrets_derive_is_deterministic_and_distinct():
    master = hashlib.sha256(b"alice").digest()
    assert cm.BaseSecrets.derive(master, 0) == ALICE
    assert cm.BaseSecrets.derive(master, 1) != ALICE
    assert cm.BaseSecrets.derive(hashlib.sha256(b"carol").digest(), 0) != ALICE
    secrets = [getattr(ALICE, name) for name in ALICE.__dataclass_fields__]
    assert len(set(secrets)) == 6 and all(len(s) == 32 for s in secrets)
    assert ALICE.funding_privkey.hex() not in repr(ALICE)
    index = index_for_commitment(7)
    assert ALICE.per_commitment_secret(7) == generate_from_seed(ALICE.shachain_seed, index)
    assert cm.Basepoints.from_wire(ALICE.basepoints().to_wire()) == ALICE.basepoints()


def test_commitment_keys_match_the_private_keys_each_side_can_derive():
    keys = cm.commitment_keys(point(), ALICE.basepoints(), BOB.basepoints())
    assert pubkey_from_privkey(ALICE.delayed_privkey(point())) == keys.local_delayed_pubkey
    assert pubkey_from_privkey(ALICE.htlc_privkey(point())) == keys.local_htlc_pubkey
    assert pubkey_from_privkey(BOB.htlc_privkey(point())) == keys.remote_htlc_pubkey
    assert pubkey_from_privkey(revocation_privkey()) == keys.revocation_pubkey
    assert keys.to_remote_pubkey == BOB.basepoints().payment_basepoint  # static remote key
    # Bob's own commitment uses his point and swaps the roles.
    bob_point = BOB.per_commitment_point(COMMITMENT_NUMBER)
    bob_keys = cm.commitment_keys(bob_point, BOB.basepoints(), ALICE.basepoints())
    assert bob_keys.to_remote_pubkey == ALICE.basepoints().payment_basepoint
    assert bob_keys.revocation_pubkey != keys.revocation_pubkey


# --- amounts, fees, trimming, order ---------------------------------------------------


def test_fees_follow_bolt3_weights():
    assert cm.htlc_timeout_fee_sat(FEERATE_PER_KW) == 3315
    assert cm.htlc_success_fee_sat(FEERATE_PER_KW) == 3515
    assert cm.commitment_fee_sat(FEERATE_PER_KW, 2) == 5340  # weight 724 + 2 * 172
    assert cm.commitment_fee_sat(253, 0) == 183


def test_commitment_amounts_trimming_and_order():
    spec = make_spec()
    commit = cm.build_commitment(spec)
    # 1000 sat < 546 + 3315 and 800 sat < 546 + 3515: trimmed; the others stay.
    assert commit.trimmed == [1, 1]
    assert [(h.offered, h.htlc_id) for h in commit.trimmed_htlcs] == [(True, 1), (False, 1)]
    assert commit.fee_sat == 5340
    assert commit.to_local_sat == (TO_LOCAL_MSAT - 5_340_000) // 1000 == 49_660
    assert commit.to_remote_sat == TO_REMOTE_MSAT // 1000 == 31_199
    amounts = [out.amount_sat for out in commit.tx.outputs]
    assert amounts == [5000, 7000, 31_199, 49_660]  # ascending, as BIP 69
    assert (commit.to_remote_vout, commit.to_local_vout) == (2, 3)
    offered, received = commit.htlc_outputs
    assert (offered.offered, offered.htlc_id, offered.vout) == (True, 0, 0)
    assert offered.cltv_expiry == 300 and offered.amount_sat == 5000
    assert (received.offered, received.htlc_id, received.vout) == (False, 0, 1)
    assert commit.htlc_output(False, 0) is received and commit.htlc_output(True, 1) is None
    assert commit.tx.outputs[3].cond == cm.holder_delayed_policy(spec)
    assert commit.tx.outputs[2].cond == pk(BOB.basepoints().payment_basepoint)
    # Trimmed HTLCs plus the sub-satoshi remainders (123 + 456 + 421 msat) are fee.
    assert commit.trimmed_msat == 1_800_000 + 1000
    assert commit.onchain_fee_sat == 5340 + 1801
    assert len(commit.tx.inputs) == 1 and commit.tx.version == 2 and not commit.tx.witnesses


@pytest.mark.parametrize("opener", [True, False])
@pytest.mark.parametrize("feerate", [0, 253, 2500, 5000, 20_000, 60_000])
def test_every_msat_is_accounted_for(opener, feerate):
    spec = make_spec(holder_is_opener=opener, feerate_per_kw=feerate)
    commit = cm.build_commitment(spec)
    outputs_sat = sum(out.amount_sat for out in commit.tx.outputs)
    assert (outputs_sat + commit.fee_sat) * 1000 + commit.trimmed_msat == FUNDING_SAT * 1000
    payer_msat = TO_LOCAL_MSAT if opener else TO_REMOTE_MSAT
    base_fee_sat = cm.commitment_fee_sat(feerate, len(commit.htlc_outputs))
    assert commit.fee_sat == min(base_fee_sat, payer_msat // 1000)  # capped at the balance
    assert all(out.amount_sat >= DUST_LIMIT_SAT for out in commit.tx.outputs)
    for htlc in HTLCS:
        fee = (cm.htlc_timeout_fee_sat if htlc.offered else cm.htlc_success_fee_sat)(feerate)
        kept = commit.htlc_output(htlc.offered, htlc.htlc_id) is not None
        assert kept == (htlc.amount_msat // 1000 >= DUST_LIMIT_SAT + fee)
    other_sat = (TO_REMOTE_MSAT if opener else TO_LOCAL_MSAT) // 1000
    paid = commit.to_local_sat if opener else commit.to_remote_sat
    assert paid in (0, payer_msat // 1000 - commit.fee_sat)
    assert (commit.to_remote_sat if opener else commit.to_local_sat) == other_sat


def test_an_opener_that_cannot_pay_the_whole_fee_pays_all_it_has():
    poor_msat = 2_000_500  # Alice, the opener, has 2000.5 sat and the fee is 5340 sat
    spec = make_spec(to_local_msat=poor_msat,
                     to_remote_msat=TO_REMOTE_MSAT + TO_LOCAL_MSAT - poor_msat)
    commit = cm.build_commitment(spec)
    assert commit.fee_sat == 2000 and commit.to_local_vout is None and commit.to_local_sat == 0
    assert commit.to_remote_sat == spec.to_remote_msat // 1000
    outputs_sat = sum(out.amount_sat for out in commit.tx.outputs)
    assert (outputs_sat + commit.fee_sat) * 1000 + commit.trimmed_msat == FUNDING_SAT * 1000


# BOLT 3 Appendix C: funding 10,000,000 sat, dust limit 546, local is the opener, and
# five HTLCs (received 1000, 2000, 4000 sat; offered 2000, 3000 sat).
BOLT3_HTLCS = (
    cm.HtlcView(0, 1_000_000, _hash(bytes([0]) * 32), 500, offered=False),
    cm.HtlcView(1, 2_000_000, _hash(bytes([1]) * 32), 501, offered=False),
    cm.HtlcView(2, 2_000_000, _hash(bytes([2]) * 32), 502, offered=True),
    cm.HtlcView(3, 3_000_000, _hash(bytes([3]) * 32), 503, offered=True),
    cm.HtlcView(4, 4_000_000, _hash(bytes([4]) * 32), 504, offered=False),
)


@pytest.mark.parametrize("to_local_msat, htlcs, feerate, fee, amounts", [
    (7_000_000_000, (), 15000, 10860, [3_000_000, 6_989_140]),
    (6_988_000_000, BOLT3_HTLCS, 0, 0, [1000, 2000, 2000, 3000, 4000, 3_000_000, 6_988_000]),
    (6_988_000_000, BOLT3_HTLCS, 647, 1024, [1000, 2000, 2000, 3000, 4000, 3_000_000, 6_986_976]),
    (6_988_000_000, BOLT3_HTLCS, 648, 914, [2000, 2000, 3000, 4000, 3_000_000, 6_987_086]),
])
def test_bolt3_appendix_c_amounts(to_local_msat, htlcs, feerate, fee, amounts):
    spec = make_spec(funding_sat=10_000_000, to_local_msat=to_local_msat,
                     to_remote_msat=3_000_000_000, htlcs=htlcs, feerate_per_kw=feerate,
                     to_self_delay=144)
    commit = cm.build_commitment(spec)
    assert commit.fee_sat == fee
    assert [out.amount_sat for out in commit.tx.outputs] == amounts


def test_identical_htlc_outputs_are_ordered_by_cltv_then_amount_and_policy():
    same_hash = _hash(b"\x09" * 32)
    htlcs = (
        cm.HtlcView(5, 9_000_000, same_hash, 420, offered=True),  # same policy as id 6
        cm.HtlcView(6, 9_000_000, same_hash, 410, offered=True),
        cm.HtlcView(7, 9_000_000, _hash(b"\x0a" * 32), 400, offered=True),
    )
    total = sum(h.amount_msat for h in htlcs)
    spec = make_spec(htlcs=htlcs, to_local_msat=TO_LOCAL_MSAT,
                     to_remote_msat=FUNDING_SAT * 1000 - TO_LOCAL_MSAT - total)
    commit = cm.build_commitment(spec)
    outs = commit.htlc_outputs
    assert [o.vout for o in outs] == [0, 1, 2]
    by_id = {o.htlc_id: o for o in outs}
    assert by_id[5].cond == by_id[6].cond
    assert by_id[6].vout == by_id[5].vout - 1  # the earlier expiry first
    packed = [commit.tx.outputs[v].cond for v in range(3)]
    keys = [msgpack.packb(c, use_bin_type=True) for c in packed]
    assert keys == sorted(keys)


def test_spec_that_does_not_add_up_is_refused():
    with pytest.raises(cm.CommitmentSpecError, match="sum to"):
        cm.build_commitment(make_spec(to_local_msat=TO_LOCAL_MSAT + 1))
    duplicate = HTLCS + (replace(HTLCS[0], amount_msat=0),)
    with pytest.raises(cm.CommitmentSpecError, match="share an htlc_id"):
        cm.build_commitment(make_spec(htlcs=duplicate))


# --- commitment number ----------------------------------------------------------------


def test_obscured_commitment_number_matches_bolt3_and_round_trips():
    opener = bytes.fromhex("034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa")
    acceptor = bytes.fromhex("032c0b7cf95324a07d05398b240174dc0c2be444d96b159aa6c7f7b1e668680991")
    factor = cm.obscuring_factor(opener, acceptor)
    assert factor == 0x2BB038521914
    assert cm.commitment_locktime_sequence(42, factor) == (0x2052193E, 0x802BB038)
    for number in (0, 1, 42, 0xFFFFFF, 0x1000000, (1 << 48) - 1):
        locktime, sequence = cm.commitment_locktime_sequence(number, factor)
        tx = Tx([TxIn(b"\x00" * 32, 0, sequence)], [], locktime)
        assert cm.commitment_number_from_tx(tx, factor) == number
        assert is_final(tx, 0)  # a 0x20xxxxxx locktime is a time long past
    with pytest.raises(cm.NotACommitment):
        cm.commitment_number_from_tx(Tx([TxIn(b"\x00" * 32, 0)], [], 0), factor)
    with pytest.raises(cm.CommitmentSpecError):
        cm.commitment_locktime_sequence(1 << 48, factor)


def test_built_commitment_carries_its_number(channel):
    assert cm.commitment_number_from_tx(channel.signed, channel.spec.obscuring_factor) == 42


# --- the commitment on chain ----------------------------------------------------------


def test_signed_commitment_is_valid_on_chain(channel):
    a, b = ALICE.basepoints(), BOB.basepoints()
    sig = channel.signed.witnesses[0].sigs[b.funding_pubkey]
    assert cm.commitment_signature_valid(channel.commit.tx, channel.spec, b.funding_pubkey, sig)
    assert not cm.commitment_signature_valid(channel.commit.tx, channel.spec, a.funding_pubkey, sig)
    alice_sig = cm.sign_commitment(channel.commit.tx, channel.spec, ALICE.funding_privkey)
    only_alice = cm.with_witnesses(channel.commit.tx, [Witness((), {a.funding_pubkey: alice_sig})])
    assert_policy_failure(only_alice, CONFIRM_HEIGHT, channel.view, "missing_signature")
    verdict = channel.view.confirm(channel.signed, CONFIRM_HEIGHT)
    assert verdict.fee_sat == channel.commit.onchain_fee_sat and verdict.revoked_inputs == ()


def test_to_local_delayed_only_after_to_self_delay(channel):
    channel.confirm_commitment()
    vout = channel.commit.to_local_vout
    inp = cm.delayed_input(channel.outpoint(vout), channel.commit.to_local_sat,
                           channel.commit.tx.outputs[vout].cond,
                           ALICE.delayed_privkey(point()), TO_SELF_DELAY)
    sweep = cm.sweep_tx([inp], DEST, 1000)
    assert_policy_failure(sweep, CONFIRM_HEIGHT + 5, channel.view, "relative_timelock",
                          TO_SELF_DELAY - 5)
    assert_policy_failure(sweep, CONFIRM_HEIGHT + TO_SELF_DELAY - 1, channel.view,
                          "relative_timelock", 1)
    verdict = channel.view.confirm(sweep, CONFIRM_HEIGHT + TO_SELF_DELAY)
    assert verdict.revoked_inputs == ()
    assert sweep.inputs[0].sequence == TO_SELF_DELAY


def test_to_local_delayed_needs_the_sequence_and_the_delayed_key(channel):
    channel.confirm_commitment()
    vout = channel.commit.to_local_vout
    cond = channel.commit.tx.outputs[vout].cond
    args = (channel.outpoint(vout), channel.commit.to_local_sat, cond)
    short_lock = cm.delayed_input(*args, ALICE.delayed_privkey(point()), TO_SELF_DELAY - 1)
    short = cm.sweep_tx([short_lock], DEST, 1000)
    assert_policy_failure(short, CONFIRM_HEIGHT + 100, channel.view, "sequence_too_low")
    wrong_key = cm.delayed_input(*args, ALICE.htlc_privkey(point()), TO_SELF_DELAY)
    assert_policy_failure(cm.sweep_tx([wrong_key], DEST, 1000), CONFIRM_HEIGHT + 100,
                          channel.view, "missing_signature")


def test_to_local_by_revocation_key_at_once(channel):
    channel.confirm_commitment()
    vout = channel.commit.to_local_vout
    cond = channel.commit.tx.outputs[vout].cond
    args = (channel.outpoint(vout), channel.commit.to_local_sat, cond)
    justice = cm.sweep_tx([cm.revocation_input(*args, revocation_privkey())], DEST, 1000)
    assert channel.view.confirm(justice, CONFIRM_HEIGHT).revoked_inputs == (0,)
    # Without the revealed per-commitment secret, Bob's basepoint secret alone is useless.
    guess = BOB.revocation_privkey(ALICE.per_commitment_secret(COMMITMENT_NUMBER + 1))
    channel.view.add(channel.outpoint(vout), channel.commit.tx.outputs[vout], CONFIRM_HEIGHT)
    bad = cm.sweep_tx([cm.revocation_input(*args, guess)], DEST, 1000)
    assert_policy_failure(bad, CONFIRM_HEIGHT, channel.view, "missing_signature")


def test_to_remote_is_bobs_at_once(channel):
    channel.confirm_commitment()
    vout = channel.commit.to_remote_vout
    inp = cm.to_remote_input(channel.outpoint(vout), channel.commit.to_remote_sat,
                             channel.commit.tx.outputs[vout].cond, BOB.payment_privkey())
    tx = cm.sweep_tx([inp], DEST, 1000)
    channel.view.confirm(tx, CONFIRM_HEIGHT)


# --- HTLC outputs and second-stage transactions ---------------------------------------


def _second_stage_sigs(channel: Channel, tx: Tx, out) -> tuple[bytes, bytes]:
    local = cm.sign_second_stage(tx, out, ALICE.htlc_privkey(point()))
    remote = cm.sign_second_stage(tx, out, BOB.htlc_privkey(point()))
    return local, remote


def _timeout_tx(channel: Channel) -> Tx:
    out = channel.commit.htlc_output(True, 0)
    tx = cm.htlc_timeout_tx(channel.commit, out, channel.spec)
    return cm.finalize_htlc_timeout(tx, channel.spec.keys, *_second_stage_sigs(channel, tx, out))


def test_htlc_timeout_tx_is_final_only_at_cltv_expiry(channel):
    channel.confirm_commitment()
    out = channel.commit.htlc_output(True, 0)
    tx = _timeout_tx(channel)
    assert (tx.locktime, tx.inputs[0].sequence) == (300, 0)
    assert tx.outputs[0].amount_sat == 5000 - 3315
    assert tx.outputs[0].cond == cm.holder_delayed_policy(channel.spec)
    err = rejection(tx, 299, channel.view)
    assert err.reason == RejectReason.NON_FINAL and err.details["blocks_needed"] == 1
    local, _ = _second_stage_sigs(channel, tx, out)
    alone = cm.finalize_htlc_timeout(tx, channel.spec.keys, local, local)
    assert_policy_failure(alone, 300, channel.view, "bad_signature")
    assert channel.view.confirm(tx, 300).revoked_inputs == ()


def test_offered_htlc_claimed_by_bob_with_the_preimage(channel):
    channel.confirm_commitment()
    out = channel.commit.htlc_output(True, 0)
    args = (channel.outpoint(out.vout), out.amount_sat, out.cond, BOB.htlc_privkey(point()),
            out.payment_hash)
    wrong = cm.sweep_tx([cm.offered_preimage_input(*args, PREIMAGES["rcv"])], DEST, 1000)
    assert_policy_failure(wrong, CONFIRM_HEIGHT, channel.view, "wrong_preimage")
    alice_key = cm.offered_preimage_input(channel.outpoint(out.vout), out.amount_sat, out.cond,
                                          ALICE.htlc_privkey(point()), out.payment_hash,
                                          PREIMAGES["off"])
    assert_policy_failure(cm.sweep_tx([alice_key], DEST, 1000), CONFIRM_HEIGHT, channel.view,
                          "missing_signature")
    claim = cm.sweep_tx([cm.offered_preimage_input(*args, PREIMAGES["off"])], DEST, 1000)
    assert channel.view.confirm(claim, CONFIRM_HEIGHT).revoked_inputs == ()


def test_received_htlc_by_htlc_success_tx_with_the_preimage(channel):
    channel.confirm_commitment()
    out = channel.commit.htlc_output(False, 0)
    tx = cm.htlc_success_tx(channel.commit, out, channel.spec)
    assert (tx.locktime, tx.inputs[0].sequence) == (0, 0)
    assert tx.outputs[0].amount_sat == 7000 - 3515
    local, remote = _second_stage_sigs(channel, tx, out)
    keys, payment_hash = channel.spec.keys, out.payment_hash
    wrong = cm.finalize_htlc_success(tx, keys, local, remote, payment_hash, PREIMAGES["off"])
    assert_policy_failure(wrong, CONFIRM_HEIGHT, channel.view, "wrong_preimage")
    both_sigs = {keys.local_htlc_pubkey: local, keys.remote_htlc_pubkey: remote}
    no_preimage = cm.with_witnesses(tx, [Witness((1, 1), both_sigs)])
    assert_policy_failure(no_preimage, CONFIRM_HEIGHT, channel.view, "missing_preimage")
    good = cm.finalize_htlc_success(tx, keys, local, remote, payment_hash, PREIMAGES["rcv"])
    assert channel.view.confirm(good, CONFIRM_HEIGHT).revoked_inputs == ()


def test_received_htlc_reclaimed_by_bob_only_after_cltv_expiry(channel):
    channel.confirm_commitment()
    out = channel.commit.htlc_output(False, 0)
    inp = cm.received_timeout_input(channel.outpoint(out.vout), out.amount_sat, out.cond,
                                    BOB.htlc_privkey(point()), out.cltv_expiry)
    claim = cm.sweep_tx([inp], DEST, 1000)
    assert claim.locktime == 310
    err = rejection(claim, 305, channel.view)
    assert err.reason == RejectReason.NON_FINAL and err.details["blocks_needed"] == 5
    # A claim whose locktime is below the expiry fails the policy itself (BIP 65).
    early = Tx(claim.inputs, claim.outputs, locktime=309)
    sig = early.sign_input(0, BOB.htlc_privkey(point()), out.amount_sat, out.cond)
    early.witnesses = [cm.received_timeout_witness(channel.spec.keys.remote_htlc_pubkey, sig)]
    assert_policy_failure(early, 400, channel.view, "absolute_timelock")
    channel.view.confirm(claim, 310)


def test_second_stage_output_delayed_after_to_self_delay_or_revoked_at_once(channel):
    channel.confirm_commitment()
    timeout = _timeout_tx(channel)
    channel.view.confirm(timeout, 300)
    out = timeout.outputs[0]
    outpoint = OutPoint(timeout.txid, 0)
    inp = cm.delayed_input(outpoint, out.amount_sat, out.cond, ALICE.delayed_privkey(point()),
                           TO_SELF_DELAY)
    sweep = cm.sweep_tx([inp], DEST, 1000)
    assert_policy_failure(sweep, 300 + TO_SELF_DELAY - 3, channel.view, "relative_timelock", 3)
    revocable = cm.revocable_outputs(timeout, channel.spec.keys.revocation_pubkey)
    justice = cm.justice_tx(timeout, revocable, revocation_privkey(), DEST, 1000)
    check_tx(sweep, 300 + TO_SELF_DELAY, channel.view)  # valid then, but Bob is first:
    assert channel.view.confirm(justice, 301).revoked_inputs == (0,)
    err = rejection(sweep, 300 + TO_SELF_DELAY, channel.view)
    assert err.reason == RejectReason.MISSING_INPUT


def test_justice_tx_sweeps_every_output_of_a_revoked_commitment(channel):
    channel.confirm_commitment()
    rev_pub = channel.spec.keys.revocation_pubkey
    outputs = cm.revocable_outputs(channel.signed, rev_pub)
    expected = {channel.commit.to_local_vout, *(o.vout for o in channel.commit.htlc_outputs)}
    assert {vout for vout, _, _ in outputs} == expected
    justice = cm.justice_tx(channel.signed, outputs, revocation_privkey(), DEST, 2000)
    verdict = channel.view.confirm(justice, CONFIRM_HEIGHT)
    assert verdict.revoked_inputs == (0, 1, 2)
    total = sum(amount for _, amount, _ in outputs)
    assert justice.outputs[0].amount_sat == total - verdict.fee_sat
    assert verdict.fee_sat * 1000 >= 2000 * justice.size  # at least the rate asked
    assert verdict.fee_sat * 1000 < 2000 * justice.size + 1000


def test_justice_tx_refuses_outputs_that_are_not_there(channel):
    rev_pub = channel.spec.keys.revocation_pubkey
    vout, amount, cond = cm.revocable_outputs(channel.signed, rev_pub)[0]
    with pytest.raises(cm.SweepError):
        cm.justice_tx(channel.signed, [(vout, amount + 1, cond)], revocation_privkey(), DEST, 1000)
    with pytest.raises(cm.SweepError):
        cm.justice_tx(channel.signed, [(99, amount, cond)], revocation_privkey(), DEST, 1000)
    to_remote = channel.commit.tx.outputs[channel.commit.to_remote_vout]
    with pytest.raises(cm.SweepError, match="no revocation branch"):
        cm.revocation_input(channel.outpoint(0), to_remote.amount_sat, to_remote.cond, b"\x01" * 32)


def test_sweep_that_would_leave_dust_is_refused(channel):
    vout = channel.commit.to_local_vout
    inp = cm.delayed_input(channel.outpoint(vout), 400, channel.commit.tx.outputs[vout].cond,
                           ALICE.delayed_privkey(point()), TO_SELF_DELAY)
    with pytest.raises(cm.SweepError, match="dust"):
        cm.sweep_tx([inp], DEST, 1000)


def test_htlc_signatures_cover_second_stage_txs_in_vout_order(channel):
    txs = cm.second_stage_txs(channel.commit, channel.spec)
    assert [tx.inputs[0].vout for tx in txs] == [o.vout for o in channel.commit.htlc_outputs]
    bob_sigs = cm.sign_htlc_txs(channel.commit, channel.spec, BOB.htlc_privkey(point()))
    bob_pub = channel.spec.keys.remote_htlc_pubkey
    assert cm.htlc_signatures_valid(channel.commit, channel.spec, bob_pub, bob_sigs)
    assert not cm.htlc_signatures_valid(channel.commit, channel.spec, bob_pub, bob_sigs[::-1])
    assert not cm.htlc_signatures_valid(channel.commit, channel.spec, bob_pub, bob_sigs[:1])
    alice_pub = channel.spec.keys.local_htlc_pubkey
    assert not cm.htlc_signatures_valid(channel.commit, channel.spec, alice_pub, bob_sigs)


def test_second_stage_tx_must_match_the_htlc_direction(channel):
    received = channel.commit.htlc_output(False, 0)
    with pytest.raises(cm.CommitmentError, match="HTLC-timeout"):
        cm.htlc_timeout_tx(channel.commit, received, channel.spec)
    with pytest.raises(cm.CommitmentError, match="not output"):
        cm.htlc_success_tx(channel.commit, replace(received, vout=0), channel.spec)
