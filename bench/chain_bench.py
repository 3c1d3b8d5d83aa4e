"""Benchmark of the L1 chain's store: restart time and query latency on a big chain.

Run as ``.venv/bin/python bench/chain_bench.py [--blocks N] [--txs-per-block K]``. It
builds a chain of 10,000 blocks and 100,000 signed transactions in-process (straight
into the ledger and its SQLite store), then measures: loading it in-process, starting
a chain process on it until ready (the restart time), and the latency of ``gettx``,
``getblock`` by hash and ``listunspent`` over the control RPC. Prints the figures and
writes ``bench/results/chain.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a plain script from any directory

from emulator import identity  # noqa: E402
from emulator.rpc import RpcClient  # noqa: E402
from emulator.supervisor import Supervisor  # noqa: E402
from emulator.tx import TxOut  # noqa: E402
from l1chain.block import Block, coinbase  # noqa: E402
from l1chain.chain import ChainLimits  # noqa: E402
from l1chain.ledger import Ledger  # noqa: E402
from l1chain.rules import feerate_sat_per_kb  # noqa: E402
from l1chain.startup import STORE_FILE, open_chain  # noqa: E402
from l1chain.store import ChainStore  # noqa: E402
from l1chain.testkit import Key, Prevout, spend  # noqa: E402

RESULTS_PATH = REPO / "bench" / "results" / "chain.json"
SEED = "lnemu-chain-bench"
WALLETS = 1_000
COIN_SAT = 100_000_000
FEE_SAT = 300
QUERIES = 2_000
RESTARTS = 3


def wallet_keys(count: int) -> list[Key]:
    """Deterministic wallet keys."""
    secrets = [identity.node_secret(SEED, f"wallet-{i}") for i in range(count)]
    return [Key(s, identity.pubkey(s)) for s in secrets]


def build(data_dir: Path, keys: list[Key], miner: Key, blocks: int, per_block: int
          ) -> tuple[dict, list[bytes]]:
    """Write a chain of ``blocks`` blocks with ``per_block`` signed txs each; its stats
    and a random sample of its txids (for cold-cache queries)."""
    rng = random.Random(SEED)
    sample: list[bytes] = []
    store = ChainStore(data_dir / STORE_FILE)
    ledger = Ledger(store)
    genesis = ledger.genesis([(k.pub, COIN_SAT) for k in keys], 0.0)
    coins = deque((Prevout.of(genesis.txs[0], i), i) for i in range(len(keys)))
    started = time.perf_counter()
    for height in range(1, blocks + 1):
        txs = []
        for _ in range(per_block):
            prev, owner = coins.popleft()
            payee = rng.randrange(len(keys))
            half = (prev.amount_sat - FEE_SAT) // 2
            tx = spend([prev], [TxOut(half, keys[payee].cond),
                                TxOut(prev.amount_sat - FEE_SAT - half, keys[owner].cond)],
                       [[keys[owner]]])
            coins.extend([(Prevout.of(tx, 0), payee), (Prevout.of(tx, 1), owner)])
            txs.append(tx)
            if rng.random() < QUERIES / (blocks * per_block):
                sample.append(tx.txid)
        fees = FEE_SAT * per_block
        reward = [coinbase(height, [TxOut(fees, miner.cond)])]
        ledger.connect(Block(height, ledger.tip.hash, float(height), reward + txs, 0, fees,
                             min(feerate_sat_per_kb(FEE_SAT, tx.size) for tx in txs)))
        if height % 1_000 == 0:
            print(f"  built {height} blocks", flush=True)
    seconds = time.perf_counter() - started
    store.close()
    return {"blocks": blocks, "txs": blocks * per_block, "build_seconds": round(seconds, 1),
            "utxos": len(ledger.utxos),
            "db_mb": round((data_dir / STORE_FILE).stat().st_size / 1e6, 1)}, sample


def load_in_process(data_dir: Path, keys: list[Key], miner: Key, verify: bool) -> dict:
    """Open the stored chain in this process, best of a few runs; optionally time verify."""
    times = []
    for _ in range(RESTARTS):
        started = time.perf_counter()
        opened = open_chain(data_dir, [(k.pub, COIN_SAT) for k in keys], miner.pub,
                            ChainLimits(), 0.0)
        times.append(time.perf_counter() - started)
        height = opened.chain.height
        if verify and len(times) == RESTARTS:
            started = time.perf_counter()
            assert opened.chain.ledger.verify()["ok"]
            verify_seconds = round(time.perf_counter() - started, 2)
        opened.store.close()
    figures = {"load_seconds_best": round(min(times), 3), "load_seconds_median":
               round(statistics.median(times), 3), "height": height}
    if verify:
        figures["verify_seconds"] = verify_seconds
    return figures


def chain_config(run_dir: Path, sup: Supervisor, keys: list[Key], miner: Key) -> Path:
    config = {"control": sup.endpoint("chain.ctl"), "blocks": sup.endpoint("chain.pub"),
              "data_dir": str(run_dir / "chain"), "miner_pubkey": miner.pub.hex(),
              "allocations": [{"pubkey": k.pub.hex(), "amount_sat": COIN_SAT} for k in keys],
              "block_interval": 0, "events": sup.events_endpoint, "parent_pid": os.getpid()}
    path = run_dir / "chain.json"
    path.write_text(json.dumps(config))
    return path


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean of samples in seconds, as milliseconds."""
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.5) * 1e3, 3), "p90_ms": round(pick(0.9) * 1e3, 3),
            "p99_ms": round(pick(0.99) * 1e3, 3),
            "mean_ms": round(statistics.fmean(ordered) * 1e3, 3)}


def time_calls(client: RpcClient, op: str, args: list[dict[str, Any]]) -> dict[str, float]:
    samples = []
    for arg in args:
        started = time.perf_counter()
        client.call(op, **arg)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def process_figures(run_dir: Path, keys: list[Key], miner: Key, blocks: int,
                    txids: list[bytes]) -> dict:
    """Start a chain process on the stored chain a few times; then time RPC queries
    (random blocks and txs, so mostly past the block cache: cold reads from SQLite)."""
    rng = random.Random(SEED + "/queries")
    with Supervisor(run_dir) as sup:
        proc = sup.add("chain", [sys.executable, "-m", "l1chain", "--config",
                                 str(chain_config(run_dir, sup, keys, miner))])
        ready = []
        for _ in range(RESTARTS):
            if proc.running:
                proc.kill()
            started = time.perf_counter()
            proc.start()
            proc.wait_ready(120)
            ready.append(time.perf_counter() - started)
        with RpcClient(sup.endpoint("chain.ctl"), timeout=60) as client:
            assert client.call("getheight") == blocks
            heights = [rng.randrange(1, blocks + 1) for _ in range(QUERIES)]
            block_hashes = [h["hash"] for start in range(0, blocks + 1, 2_000)
                            for h in client.call("getheaders", start=start)]
            figures = {
                "process_start_to_ready_seconds": [round(t, 3) for t in ready],
                "getheight": time_calls(client, "getheight", [{}] * QUERIES),
                "gettx": time_calls(client, "gettx", [{"txid": t} for t in txids]),
                "getblock_by_hash": time_calls(client, "getblock", [
                    {"hash": block_hashes[h]} for h in heights]),
                "listunspent": time_calls(client, "listunspent", [
                    {"pubkey": rng.choice(keys).pub} for _ in range(QUERIES)]),
                "coins_per_listunspent": len(client.call("listunspent", pubkey=keys[0].pub)),
                "rss_mb_after_load": _rss_mb(proc.pid),
            }
        proc.stop()
    return figures


def _rss_mb(pid: int | None) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> None:
    """Build, measure, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--txs-per-block", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--verify", action="store_true",
                        help="also time verify (rebuilds the UTXO set from every block)")
    args = parser.parse_args()
    keys, miner = wallet_keys(WALLETS), Key.named("bench-miner")
    run_dir = Path(tempfile.mkdtemp(prefix="lnemu-chain-bench-"))
    (run_dir / "chain").mkdir()
    try:
        print(f"building {args.blocks} blocks x {args.txs_per_block} txs in {run_dir}")
        stats, txids = build(run_dir / "chain", keys, miner, args.blocks, args.txs_per_block)
        results: dict[str, Any] = {"chain": stats}
        results["in_process"] = load_in_process(run_dir / "chain", keys, miner, args.verify)
        results["process"] = process_figures(run_dir, keys, miner, args.blocks, txids)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}
    print(json.dumps(results, indent=2))
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
