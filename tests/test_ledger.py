"""The ledger and its validation rules: one test per rejection reason, blocks, undo, verify."""
from __future__ import annotations

import pytest

from emulator.policy import Witness, after, and_, older, or_, pk, revocation, sha256
from emulator.tx import MAX_MONEY_SAT, SEQUENCE_FINAL, OutPoint, Tx, TxIn, TxOut
from l1chain.block import Block, coinbase
from l1chain.chain import Chain, ChainLimits
from l1chain.errors import BadBlock, ChainError, RejectReason, TxRejected
from l1chain.ledger import Ledger
from l1chain.rules import DUST_LIMIT_SAT
from l1chain.server import parse_tx
from l1chain.testkit import Key, Prevout, genesis_prevouts, new_chain, pay, preimage_of, spend

ALICE, BOB, CAROL = Key.named("alice"), Key.named("bob"), Key.named("carol")
REV, DELAYED = Key.named("revocation"), Key.named("delayed")
TO_SELF_DELAY = 6


@pytest.fixture
def chain() -> Chain:
    return new_chain([(ALICE, 1_000_000), (BOB, 500_000)])


def rejected(chain: Chain, tx: Tx) -> TxRejected:
    with pytest.raises(TxRejected) as info:
        chain.submit(tx)
    return info.value


def alice_coin(chain: Chain) -> Prevout:
    return genesis_prevouts(chain)[0]


def confirm(chain: Chain, tx: Tx) -> int:
    """Submit ``tx`` and mine it; the height that confirmed it."""
    chain.submit(tx)
    chain.mine(float(chain.height + 1))
    return chain.ledger.tx_index[tx.txid][0]


def lock_to(chain: Chain, cond: list, amount_sat: int = 400_000) -> Prevout:
    """Move Alice's genesis coin to an output locked by ``cond``; return that output."""
    tx = pay(alice_coin(chain), ALICE, [amount_sat], to=cond)
    confirm(chain, tx)
    return Prevout.of(tx, 0)


# --- shape and amounts ------------------------------------------------------------------

def test_malformed_wire_forms_are_rejected_as_malformed() -> None:
    for bad in ({"version": 2}, b"\xc1not msgpack", [1, 2, 3]):
        with pytest.raises(TxRejected) as info:
            parse_tx(bad)
        assert info.value.reason is RejectReason.MALFORMED


def test_oversized_transaction(chain: Chain) -> None:
    small = Chain(chain.ledger, chain.miner_pubkey, ChainLimits(max_tx_bytes=300))
    tx = pay(alice_coin(chain), ALICE, [100_000, 100_000, 100_000])
    exc = rejected(small, tx)
    assert exc.reason is RejectReason.OVERSIZED and exc.details["limit"] == 300


def test_transaction_larger_than_a_block_is_oversized(chain: Chain) -> None:
    tiny_blocks = Chain(chain.ledger, chain.miner_pubkey, ChainLimits(max_block_bytes=500))
    tx = pay(alice_coin(chain), ALICE, [100_000] * 3)
    assert tx.size > 300
    assert rejected(tiny_blocks, tx).reason is RejectReason.OVERSIZED


def test_zero_inputs_or_zero_outputs(chain: Chain) -> None:
    assert rejected(chain, coinbase(5, [TxOut(1_000, ALICE.cond)])).reason is \
        RejectReason.NO_INPUTS
    no_outputs = spend([alice_coin(chain)], [], [[ALICE]])
    assert rejected(chain, no_outputs).reason is RejectReason.NO_OUTPUTS


def test_missing_witness(chain: Chain) -> None:
    coin = alice_coin(chain)
    unsigned = Tx([TxIn(coin.outpoint.txid, coin.outpoint.vout)], [TxOut(900_000, BOB.cond)])
    assert rejected(chain, unsigned).reason is RejectReason.MISSING_WITNESS


def test_duplicate_input(chain: Chain) -> None:
    coin = alice_coin(chain)
    tx = spend([coin, coin], [TxOut(900_000, BOB.cond)], [[ALICE], [ALICE]])
    assert rejected(chain, tx).reason is RejectReason.DUPLICATE_INPUT


def test_negative_amount(chain: Chain) -> None:
    tx = spend([alice_coin(chain)], [TxOut(-1, BOB.cond), TxOut(5_000, BOB.cond)], [[ALICE]])
    assert rejected(chain, tx).reason is RejectReason.NEGATIVE_AMOUNT


def test_amount_overflow_of_one_output_and_of_the_sum(chain: Chain) -> None:
    one = spend([alice_coin(chain)], [TxOut(MAX_MONEY_SAT + 1, BOB.cond)], [[ALICE]])
    assert rejected(chain, one).reason is RejectReason.AMOUNT_OVERFLOW
    half = MAX_MONEY_SAT // 2 + 1
    two = spend([alice_coin(chain)], [TxOut(half, BOB.cond), TxOut(half, BOB.cond)], [[ALICE]])
    assert rejected(chain, two).reason is RejectReason.AMOUNT_OVERFLOW


def test_dust_output(chain: Chain) -> None:
    tx = pay(alice_coin(chain), ALICE, [500_000, DUST_LIMIT_SAT - 1])
    exc = rejected(chain, tx)
    assert exc.reason is RejectReason.DUST and exc.details["output"] == 1
    assert confirm(chain, pay(alice_coin(chain), ALICE, [500_000, DUST_LIMIT_SAT])) == 1


def test_outputs_exceed_inputs(chain: Chain) -> None:
    tx = pay(alice_coin(chain), ALICE, [1_000_001])
    assert rejected(chain, tx).reason is RejectReason.OUTPUTS_EXCEED_INPUTS


# --- inputs ----------------------------------------------------------------------------

def test_unknown_input(chain: Chain) -> None:
    ghost = Prevout(OutPoint(b"\x11" * 32, 0), 1_000_000, ALICE.cond)
    exc = rejected(chain, pay(ghost, ALICE, [900_000]))
    assert exc.reason is RejectReason.MISSING_INPUT


def test_spent_input_names_the_spender(chain: Chain) -> None:
    first = pay(alice_coin(chain), ALICE, [990_000])
    confirm(chain, first)
    again = pay(alice_coin(chain), ALICE, [980_000])
    exc = rejected(chain, again)
    assert exc.reason is RejectReason.SPENT_INPUT and exc.details["spender"] == first.txid


def test_already_confirmed(chain: Chain) -> None:
    tx = pay(alice_coin(chain), ALICE, [990_000])
    confirm(chain, tx)
    assert rejected(chain, tx).reason is RejectReason.ALREADY_CONFIRMED


# --- timelocks and policies ---------------------------------------------------------------

def test_absolute_timelock_not_reached_is_non_final_with_blocks_needed(chain: Chain) -> None:
    tx = spend([alice_coin(chain)], [TxOut(990_000, ALICE.cond)], [[ALICE]], locktime=5)
    exc = rejected(chain, tx)  # tip 0, next block 1, final in block 5: 4 blocks first
    assert exc.reason is RejectReason.NON_FINAL and exc.details["blocks_needed"] == 4
    for _ in range(4):
        chain.mine(0.0)
    assert chain.submit(tx).txid == tx.txid


def test_after_policy_below_its_height_names_the_branch(chain: Chain) -> None:
    prev = lock_to(chain, and_(pk(ALICE.pub), after(50)))
    tx = spend([prev], [TxOut(390_000, ALICE.cond)], [[ALICE]], locktime=1)
    exc = rejected(chain, tx)
    assert exc.reason is RejectReason.POLICY
    assert exc.details["policy_reason"] == "absolute_timelock"
    assert "after(50)" in exc.details["branch"]


def test_bad_signature(chain: Chain) -> None:
    coin = alice_coin(chain)
    tx = spend([coin], [TxOut(990_000, BOB.cond)], [[BOB]])  # Bob signs, not Alice
    tx.witnesses = [Witness(sigs={ALICE.pub: tx.witnesses[0].sigs[BOB.pub]})]
    exc = rejected(chain, tx)
    assert exc.reason is RejectReason.POLICY and exc.details["policy_reason"] == "bad_signature"
    assert exc.details["input"] == 0


def test_missing_signature(chain: Chain) -> None:
    coin = alice_coin(chain)
    tx = spend([coin], [TxOut(990_000, BOB.cond)], [[]])
    assert rejected(chain, tx).details["policy_reason"] == "missing_signature"


def test_wrong_preimage(chain: Chain) -> None:
    preimage, digest = preimage_of("htlc")
    prev = lock_to(chain, sha256(digest))
    wrong = spend([prev], [TxOut(390_000, BOB.cond)], [[]],
                  preimages=[{digest: preimage_of("other")[0]}])
    exc = rejected(chain, wrong)
    assert exc.details["policy_reason"] == "wrong_preimage" and exc.details["branch"] == "sha256"
    right = spend([prev], [TxOut(390_000, BOB.cond)], [[]], preimages=[{digest: preimage}])
    assert chain.submit(right).fee_sat == 10_000


def test_relative_timelock_says_how_many_blocks_are_still_needed(chain: Chain) -> None:
    to_local = or_(revocation(pk(REV.pub)), and_(pk(DELAYED.pub), older(TO_SELF_DELAY)))
    prev = lock_to(chain, to_local)  # confirmed at height 1
    delayed = spend([prev], [TxOut(390_000, DELAYED.cond)], [[DELAYED]], paths=[(1,)],
                    sequence=TO_SELF_DELAY)
    exc = rejected(chain, delayed)
    assert exc.reason is RejectReason.POLICY
    assert exc.details["policy_reason"] == "relative_timelock"
    assert exc.details["blocks_needed"] == TO_SELF_DELAY - 1
    assert "older(6)" in exc.details["branch"] and "5 more blocks" in str(exc)
    for _ in range(TO_SELF_DELAY - 1):
        chain.mine(0.0)
    assert chain.submit(delayed).revoked_inputs == ()


def test_revocation_branch_is_accepted_at_once_and_flagged(chain: Chain) -> None:
    to_local = or_(revocation(pk(REV.pub)), and_(pk(DELAYED.pub), older(TO_SELF_DELAY)))
    prev = lock_to(chain, to_local)
    justice = spend([prev], [TxOut(390_000, REV.cond)], [[REV]], paths=[(0,)])
    assert chain.submit(justice).revoked_inputs == (0,)
    mined = chain.mine(0.0)
    assert [c.revoked_inputs for c in mined.confirmed] == [(0,)]
    assert mined.confirmed[0].revoked_outpoints == (prev.outpoint,)


def test_final_sequence_ignores_locktime_but_not_after(chain: Chain) -> None:
    tx = spend([alice_coin(chain)], [TxOut(990_000, ALICE.cond)], [[ALICE]], locktime=100,
               sequence=SEQUENCE_FINAL)
    assert chain.submit(tx).fee_sat == 10_000


# --- blocks, undo and verify -----------------------------------------------------------------

def test_fees_go_to_the_miner_and_supply_is_kept(chain: Chain) -> None:
    miner = Key.named("miner")
    confirm(chain, pay(alice_coin(chain), ALICE, [990_000]))
    ledger = chain.ledger
    assert [c.txout.amount_sat for c in ledger.unspent_for_key(miner.pub)] == [10_000]
    assert ledger.utxo_total_sat() == ledger.supply_sat == 1_500_000
    assert ledger.verify()["ok"]


def test_block_header_commits_to_txids_and_is_indexed_by_hash(chain: Chain) -> None:
    tx = pay(alice_coin(chain), ALICE, [990_000])
    confirm(chain, tx)
    block = chain.ledger.block(1)
    assert block.txids[1] == tx.txid and block.prev_hash == chain.ledger.block(0).hash
    assert chain.ledger.block_by_hash(block.hash) is block
    assert chain.ledger.block_by_hash(b"\x00" * 32) is None
    other = Block(1, block.prev_hash, block.time, block.txs[:1], block.nonce)
    assert other.tx_root != block.tx_root and other.hash != block.hash


def snapshot(ledger: Ledger) -> tuple:
    return (dict(ledger.utxos), dict(ledger.tx_index), dict(ledger.spent_by),
            {k: set(v) for k, v in ledger.by_key.items()}, [h.hash for h in ledger.headers])


def test_disconnect_restores_every_index_even_with_in_block_chains(chain: Chain) -> None:
    before = snapshot(chain.ledger)
    parent = pay(alice_coin(chain), ALICE, [600_000, 390_000])
    child = pay(Prevout.of(parent, 0), ALICE, [590_000], to=BOB.cond)
    chain.submit(parent)
    chain.submit(child)
    mined = chain.mine(1.0)
    assert mined.block.txids[1:] == [parent.txid, child.txid]
    assert chain.ledger.verify()["ok"]
    assert [c.outpoint.txid for c in chain.ledger.unspent_for_key(BOB.pub)][-1] == child.txid
    chain.ledger.disconnect()
    assert snapshot(chain.ledger) == before
    assert chain.ledger.verify()["ok"]


def test_connect_refuses_a_double_spend_in_one_block(chain: Chain) -> None:
    one = pay(alice_coin(chain), ALICE, [990_000])
    two = pay(alice_coin(chain), BOB, [980_000], to=BOB.cond)
    block = Block(1, chain.ledger.tip.hash, 1.0,
                  [coinbase(1, [TxOut(30_000, ALICE.cond)]), one, two])
    with pytest.raises(BadBlock, match="spent twice"):
        chain.ledger.connect(block)
    assert chain.ledger.height == 0 and chain.ledger.verify()["ok"]


def test_connect_refuses_wrong_parent_missing_input_and_greedy_coinbase(chain: Chain) -> None:
    ledger = chain.ledger
    with pytest.raises(BadBlock, match="build on the tip"):
        ledger.connect(Block(1, b"\x01" * 32, 1.0, [coinbase(1, [])]))
    tx = pay(alice_coin(chain), ALICE, [990_000])
    with pytest.raises(BadBlock, match="coinbase pays"):
        ledger.connect(Block(1, ledger.tip.hash, 1.0,
                             [coinbase(1, [TxOut(10_001, ALICE.cond)]), tx]))
    ghost = pay(Prevout(OutPoint(b"\x22" * 32, 0), 5_000, ALICE.cond), ALICE, [4_000])
    with pytest.raises(BadBlock, match="missing"):
        ledger.connect(Block(1, ledger.tip.hash, 1.0, [coinbase(1, []), ghost]))
    with pytest.raises(ChainError):
        Ledger().disconnect()


def test_verify_detects_a_tampered_utxo_set(chain: Chain) -> None:
    confirm(chain, pay(alice_coin(chain), ALICE, [990_000]))
    ledger = chain.ledger
    op, coin = next(iter(ledger.utxos.items()))
    ledger.utxos[op] = type(coin)(op, TxOut(coin.txout.amount_sat + 1, coin.txout.cond),
                                  coin.height)
    report = ledger.verify()
    assert not report["ok"] and any("utxos" in p for p in report["problems"])
