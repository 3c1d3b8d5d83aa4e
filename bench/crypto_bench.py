"""Micro-benchmarks of lnemu's crypto: Sphinx onions, error onions, BOLT 11 invoices.

Run as ``.venv/bin/python bench/crypto_bench.py``; prints a table of µs per
operation and writes ``bench/results/crypto.json``. Keys are derived from a fixed
seed so runs are comparable.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a plain script from any directory

from coincurve import PrivateKey  # noqa: E402

from emulator.crypto import sphinx  # noqa: E402

RESULTS_PATH = REPO / "bench" / "results" / "crypto.json"
SEED = b"lnemu-crypto-bench"
ONION_HOPS = 20
ERROR_HOPS = 5
REPEATS = 5


def _seeded_key(label: str) -> bytes:
    """A deterministic private key for ``label``."""
    return hashlib.sha256(SEED + label.encode()).digest()


def time_us(operation: Callable[[], object]) -> tuple[float, int]:
    """Best-of-5 µs per call of ``operation``, and the calls per timing loop."""
    timer = timeit.Timer(operation)
    number, _ = timer.autorange()  # loops long enough to take at least 0.2 s
    best = min(timer.repeat(repeat=REPEATS, number=number))
    return best / number * 1e6, number


def _route(num_hops: int) -> tuple[bytes, list[bytes], list[tuple[bytes, bytes]]]:
    """Session key, node private keys and hops with full-size 26-byte forwarding payloads."""
    node_keys = [_seeded_key(f"node-{index}") for index in range(num_hops)]
    # amt_to_forward (tu64), outgoing_cltv_value (tu32), short_channel_id: 2+8, 2+4, 2+8 bytes
    payload = bytes(26)
    hops = [(PrivateKey(key).public_key.format(), payload) for key in node_keys]
    return _seeded_key("session"), node_keys, hops


def bench_sphinx() -> dict[str, tuple[float, int]]:
    """Time a 20-hop onion build, one peel, and an error's build+wrap+decode over 5 hops."""
    session_key, node_keys, hops = _route(ONION_HOPS)
    associated_data = hashlib.sha256(SEED + b"payment-hash").digest()
    onion = sphinx.build_onion(session_key, hops, associated_data)
    results = {
        f"onion build ({ONION_HOPS} hops)": time_us(
            lambda: sphinx.build_onion(session_key, hops, associated_data)
        ),
        "onion peel (1 hop)": time_us(
            lambda: sphinx.peel_onion(onion, node_keys[0], associated_data)
        ),
    }
    error_session, error_keys, error_hops = _route(ERROR_HOPS)
    error_pubkeys = [pubkey for pubkey, _ in error_hops]
    error_onion = sphinx.build_onion(error_session, error_hops, associated_data)
    secrets = []
    for node_key in error_keys:
        layer = sphinx.peel_onion(error_onion, node_key, associated_data)
        secrets.append(layer.shared_secret)
        error_onion = layer.next_onion
    failure_message = b"\x40\x0f" + bytes(12)  # incorrect_or_unknown_payment_details

    def error_round_trip() -> tuple[int, bytes]:
        packet = sphinx.build_error(secrets[-1], failure_message)
        for shared_secret in reversed(secrets[:-1]):
            packet = sphinx.wrap_error(shared_secret, packet)
        return sphinx.decode_error(error_session, error_pubkeys, packet)

    label = f"error build+wrap+decode ({ERROR_HOPS} hops)"
    results[label] = time_us(error_round_trip)
    return results


def bench_bolt11() -> tuple[dict[str, tuple[float, int]], str | None]:
    """Time invoice encode and decode, or say why they were skipped."""
    try:
        from emulator.crypto import bolt11
    except ImportError as exc:
        return {}, f"emulator.crypto.bolt11 not importable ({exc})"
    vectors = json.loads((REPO.parent / "shared" / "vectors" / "bolt11-examples.json").read_text())
    privkey = bytes.fromhex(vectors["priv_key"])
    text = vectors["valid"][1]["invoice"]  # the "$3 for a cup of coffee" example
    invoice = bolt11.decode(text)
    return {
        "invoice encode": time_us(lambda: bolt11.encode(invoice, privkey)),
        "invoice decode": time_us(lambda: bolt11.decode(text)),
    }, None


def print_table(results: dict[str, tuple[float, int]], skipped: str | None) -> None:
    """Print one row per operation: name, µs per call, calls per timing loop."""
    width = max(len(name) for name in results)
    print(f"{'operation':<{width}}  {'µs/op':>10}  {'loop':>6}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 6}")
    for name, (micros, number) in results.items():
        print(f"{name:<{width}}  {micros:>10.1f}  {number:>6}")
    if skipped:
        print(f"invoices skipped: {skipped}")


def main() -> None:
    """Run the benchmarks, print the table and write bench/results/crypto.json."""
    results = bench_sphinx()
    invoice_results, skipped = bench_bolt11()
    results.update(invoice_results)
    print_table(results, skipped)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "us_per_op": {name: round(micros, 2) for name, (micros, _) in results.items()},
        "bolt11_skipped": skipped,
    }
    RESULTS_PATH.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
