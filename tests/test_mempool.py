"""The mempool and the miner: fee-rate order, RBF, unconfirmed chains, congestion, fee
spikes, censorship, reorgs, and the property that a double spend never confirms."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.tx import OutPoint, Tx, TxOut
from l1chain.chain import Chain, ChainLimits
from l1chain.errors import BadFaultRequest, RejectReason, TxRejected
from l1chain.mempool import MAX_ANCESTORS
from l1chain.miner import COINBASE_RESERVE_BYTES
from l1chain.testkit import Key, Prevout, genesis_prevouts, new_chain, pay, spend

ALICE, BOB = Key.named("alice"), Key.named("bob")
COIN_SAT = 100_000


def coins_chain(n: int, limits: ChainLimits | None = None) -> tuple[Chain, list[Prevout]]:
    chain = new_chain([(ALICE, COIN_SAT)] * n, limits=limits)
    return chain, genesis_prevouts(chain)


def rejected(chain: Chain, tx: Tx) -> TxRejected:
    with pytest.raises(TxRejected) as info:
        chain.submit(tx)
    return info.value


def mined_txids(chain: Chain) -> list[bytes]:
    return chain.mine(float(chain.height + 1)).block.txids[1:]


def test_blocks_take_the_best_fee_rate_first() -> None:
    chain, coins = coins_chain(3)
    txs = [pay(coin, ALICE, [COIN_SAT - fee]) for coin, fee in zip(coins, (500, 3000, 1500), strict=True)]
    for tx in txs:
        chain.submit(tx)
    assert [e.txid for e in chain.mempool.by_feerate()] == [txs[1].txid, txs[2].txid,
                                                           txs[0].txid]
    assert mined_txids(chain) == [txs[1].txid, txs[2].txid, txs[0].txid]
    assert len(chain.mempool) == 0


def test_duplicate_submission() -> None:
    chain, coins = coins_chain(1)
    tx = pay(coins[0], ALICE, [99_000])
    chain.submit(tx)
    assert rejected(chain, tx).reason is RejectReason.DUPLICATE


def test_first_seen_wins_a_conflict_that_does_not_pay_more() -> None:
    chain, coins = coins_chain(1)
    first = pay(coins[0], ALICE, [99_000])
    chain.submit(first)
    same_fee = pay(coins[0], ALICE, [99_000], to=BOB.cond)
    exc = rejected(chain, same_fee)
    assert exc.reason is RejectReason.DOUBLE_SPEND and exc.details["conflicts"] == [first.txid]
    # A higher absolute fee but, spread over a much bigger tx, a lower fee rate.
    bigger = pay(coins[0], ALICE, [5_000] * 19 + [3_500])
    assert 1_500 * first.size < 1_000 * bigger.size  # fee 1,500 vs 1,000 sat
    assert rejected(chain, bigger).reason is RejectReason.DOUBLE_SPEND
    assert list(chain.mempool.entries) == [first.txid]


def test_replace_by_fee_evicts_the_conflict_and_its_descendants() -> None:
    chain, coins = coins_chain(1)
    first = pay(coins[0], ALICE, [99_000])
    child = pay(Prevout.of(first, 0), ALICE, [98_000])
    chain.submit(first)
    chain.submit(child)
    assert chain.mempool.entries[child.txid].parents == {first.txid}
    too_cheap = pay(coins[0], ALICE, [98_500], to=BOB.cond)  # beats first, not first + child
    assert rejected(chain, too_cheap).reason is RejectReason.DOUBLE_SPEND
    bump = pay(coins[0], ALICE, [97_000], to=BOB.cond)
    accepted = chain.submit(bump)
    assert accepted.replaced == sorted([first.txid, child.txid])
    assert list(chain.mempool.entries) == [bump.txid]
    assert chain.mempool.spends == {coins[0].outpoint: bump.txid}
    assert mined_txids(chain) == [bump.txid]


def test_a_replacement_may_not_spend_what_it_replaces() -> None:
    chain, coins = coins_chain(2)
    first = pay(coins[0], ALICE, [99_000])
    chain.submit(first)
    both = spend([coins[0], Prevout.of(first, 0)], [TxOut(150_000, ALICE.cond)],
                 [[ALICE], [ALICE]])
    exc = rejected(chain, both)
    assert exc.reason is RejectReason.DOUBLE_SPEND and "which it would replace" in str(exc)


def test_unconfirmed_chains_confirm_parents_first_and_are_limited() -> None:
    chain, coins = coins_chain(1)
    txs, prev = [], coins[0]
    for i in range(MAX_ANCESTORS):
        tx = pay(prev, ALICE, [prev.amount_sat - 500 - 100 * i])  # children pay better
        chain.submit(tx)
        txs.append(tx)
        prev = Prevout.of(tx, 0)
    exc = rejected(chain, pay(prev, ALICE, [prev.amount_sat - 5_000]))
    assert exc.reason is RejectReason.TOO_LONG_MEMPOOL_CHAIN
    assert mined_txids(chain) == [tx.txid for tx in txs]
    assert chain.ledger.verify()["ok"]


def test_congestion_fills_blocks_to_the_limit_and_raises_the_estimate() -> None:
    probe_chain, probe_coins = coins_chain(1)
    size = pay(probe_coins[0], ALICE, [99_000]).size
    limit = COINBASE_RESERVE_BYTES + 3 * size + 10  # three txs per block
    chain, coins = coins_chain(9, ChainLimits(max_block_bytes=limit))
    fees = [1_000 + 100 * i for i in range(9)]
    txs = [pay(coin, ALICE, [COIN_SAT - fee]) for coin, fee in zip(coins, fees, strict=True)]
    for tx in txs:
        chain.submit(tx)
    estimate = chain.estimate_fee(1)
    assert estimate["basis"] == "mempool"
    assert estimate["feerate_sat_per_kb"] > chain.mempool.entries[txs[6].txid].feerate
    by_fee = [tx.txid for tx in reversed(txs)]
    for start in (0, 3, 6):
        mined = chain.mine(0.0)
        assert mined.block.txids[1:] == by_fee[start:start + 3]
        assert mined.block.size <= limit
    assert len(chain.mempool) == 0
    after = chain.estimate_fee(1)
    assert after["basis"] == "recent_blocks"  # the last blocks were full
    assert after["feerate_sat_per_kb"] == max(h.min_feerate for h in chain.ledger.headers[1:])
    assert chain.ledger.verify()["ok"]


def test_fee_spike_leaves_cheap_txs_out_and_is_reported_by_estimatefee() -> None:
    chain, coins = coins_chain(2)
    cheap, rich = pay(coins[0], ALICE, [99_000]), pay(coins[1], ALICE, [90_000])
    chain.submit(cheap)
    chain.submit(rich)
    spike = chain.mempool.entries[cheap.txid].feerate + 1
    chain.feespike(spike, 2)
    assert chain.estimate_fee(1) == {**chain.estimate_fee(1), "basis": "feespike",
                                     "feerate_sat_per_kb": spike}
    assert mined_txids(chain) == [rich.txid]
    assert mined_txids(chain) == []
    assert chain.estimate_fee(1)["basis"] != "feespike"
    assert mined_txids(chain) == [cheap.txid]
    with pytest.raises(BadFaultRequest):
        chain.feespike(-1, 2)


def test_censored_tx_stays_in_the_mempool_and_confirms_after_its_blocks() -> None:
    chain, coins = coins_chain(2)
    censored, other = pay(coins[0], ALICE, [90_000]), pay(coins[1], ALICE, [99_000])
    chain.censor(censored.txid, 2)
    chain.submit(censored)
    chain.submit(other)
    assert mined_txids(chain) == [other.txid]
    assert mined_txids(chain) == [] and censored.txid in chain.mempool
    assert mined_txids(chain) == [censored.txid]


def test_reorg_returns_txs_drops_the_dropped_and_its_children() -> None:
    chain, coins = coins_chain(4)
    a = pay(coins[0], ALICE, [99_000])
    b = pay(coins[1], ALICE, [99_000])
    a_child = pay(Prevout.of(a, 0), ALICE, [98_000])
    d = pay(coins[2], ALICE, [99_000])
    pending = pay(Prevout.of(d, 0), ALICE, [98_000])
    for group in ([a], [b, a_child], [d]):
        for tx in group:
            chain.submit(tx)
        chain.mine(float(chain.height + 1))
    chain.submit(pending)
    old = [h.hash for h in chain.ledger.headers]
    result = chain.reorg(3, drop=[a.txid], time=99.0)
    assert result.fork_height == 0 and result.returned == [b.txid, a_child.txid, d.txid]
    assert [t for t, _ in result.evicted] == [a_child.txid]
    assert chain.height == 4 and len(result.mined) == 4
    assert not set(old[1:]) & set(chain.ledger.by_hash)
    index = chain.ledger.tx_index
    assert {b.txid, d.txid, pending.txid} <= set(index) and a.txid not in index
    assert a_child.txid not in index and len(chain.mempool) == 0
    assert chain.ledger.verify()["ok"]
    with pytest.raises(BadFaultRequest):
        chain.reorg(chain.height + 1)


def test_reorg_without_mining_leaves_a_shorter_chain_and_a_full_mempool() -> None:
    chain, coins = coins_chain(1)
    tx = pay(coins[0], ALICE, [99_000])
    chain.submit(tx)
    chain.mine(1.0)
    chain.mine(2.0)
    result = chain.reorg(2, mine=False)
    assert chain.height == 0 and result.mined == [] and tx.txid in chain.mempool
    assert chain.mine(3.0).block.txids[1:] == [tx.txid]


# --- the property: a double spend never confirms ----------------------------------------------

FEES = (400, 800, 1_600, 3_200)
# Small picks hit the genesis coins and early outputs again and again: conflicts.
spend_op = st.tuples(st.just("spend"), st.integers(0, 4) | st.integers(0, 63),
                     st.sampled_from(FEES), st.booleans())
op_strategy = st.one_of(
    spend_op, spend_op, spend_op, st.tuples(st.just("mine")),
    st.tuples(st.just("reorg"), st.integers(1, 3), st.booleans(), st.booleans()),
)


def _apply(chain: Chain, pool: list[Prevout], op: tuple) -> None:
    if op[0] == "spend":
        _, pick, fee, split = op
        prev = pool[pick % len(pool)]
        amount = prev.amount_sat - fee
        amounts = [amount // 2, amount - amount // 2] if split else [amount]
        tx = pay(prev, ALICE, amounts)
        pool.extend(Prevout.of(tx, i) for i in range(len(amounts)))
        try:
            chain.submit(tx)
        except TxRejected:
            pass
    elif op[0] == "mine":
        chain.mine(float(chain.height + 1))
    elif chain.height >= op[1]:
        _, depth, drop_one, mine = op
        drop = list(chain.ledger.block(chain.height).txids[1:2]) if drop_one else []
        chain.reorg(depth, drop=drop, mine=mine, time=float(chain.height + 7))


def _check_mempool(chain: Chain) -> None:
    spends = [txin.outpoint for e in chain.mempool.entries.values() for txin in e.tx.inputs]
    assert len(spends) == len(set(spends)), "two mempool transactions spend one outpoint"
    assert not any(op in chain.ledger.spent_by for op in spends)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=40))
def test_conflicting_spends_never_confirm_twice(ops: list[tuple]) -> None:
    chain, coins = coins_chain(3)
    pool = list(coins)
    for op in ops:
        _apply(chain, pool, op)
        _check_mempool(chain)
    chain.mine(1e9)
    spent: set[OutPoint] = set()
    for height in range(chain.height + 1):
        for tx in chain.ledger.block(height).txs:
            for txin in tx.inputs:
                assert txin.outpoint not in spent, f"{txin.outpoint} spent twice"
                spent.add(txin.outpoint)
    report = chain.ledger.verify()
    assert report["ok"], report["problems"]
