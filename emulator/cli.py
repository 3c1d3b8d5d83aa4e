"""``lnemu``: the command line. Each verb's docstring is its help text.

Exit codes: 0 success, 1 a failed check or operation, 2 bad input.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from emulator.envelope import to_plain
from emulator.errors import LnemuError

CHAIN_ENV = "LNEMU_CHAIN_RPC"


def _emit(value: Any, as_json: bool) -> None:
    plain = to_plain(value)
    if as_json:
        click.echo(json.dumps(plain, indent=2, sort_keys=True))
    elif isinstance(plain, dict):
        width = max((len(str(k)) for k in plain), default=0)
        for key, item in plain.items():
            click.echo(f"{str(key).ljust(width)}  {item}")
    else:
        click.echo(plain if isinstance(plain, str) else json.dumps(plain, indent=2))


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="lnemu")
def main() -> None:
    """lnemu — a Lightning Network emulator: one OS process per peer, a real L1 chain."""


# --- run ---------------------------------------------------------------------------
@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/NAME-TIME).")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--quiet", is_flag=True, help="No progress display; print only the result.")
def run(scenario: str, out: str | None, seed: int | None, quiet: bool) -> None:
    """Run SCENARIO (a TOML file): start the network, play it, check it, report."""
    from emulator.report import print_result
    from emulator.runner import run_scenario
    from emulator.scenario import ScenarioError, load_scenario

    try:
        spec = load_scenario(scenario)
    except ScenarioError as exc:
        _fail(str(exc), 2)
    if seed is not None:
        spec = dataclasses.replace(spec, seed=seed)
    progress = None if quiet else (lambda message: click.echo(f"… {message}", err=True))
    result = run_scenario(spec, Path(out) if out else None, progress)
    print_result(result, quiet)
    sys.exit(0 if result.ok else 1)


# --- chain ---------------------------------------------------------------------------
@main.group()
def chain() -> None:
    """The L1 chain process: start it, or query a running one."""


def _chain_client(endpoint: str | None):
    from emulator.daemon import DEFAULT_DIR, network_info
    from emulator.rpc import RpcClient

    endpoint = endpoint or os.environ.get(CHAIN_ENV)
    if not endpoint:
        try:
            endpoint = network_info(DEFAULT_DIR)["chain"]["control"]
        except LnemuError:
            _fail(f"no chain endpoint: pass --rpc, set {CHAIN_ENV}, or `lnemu up` first", 2)
    return RpcClient(endpoint, timeout=10)


def _call(client: Any, op: str, **args: Any) -> Any:
    from emulator.cli_network import call_client
    return call_client(client, op, **args)


rpc_option = click.option("--rpc", "endpoint", help=f"Chain control endpoint (or ${CHAIN_ENV}).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@chain.command("start")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True))
def chain_start(config_path: str) -> None:
    """Run a chain process in the foreground from a JSON config."""
    from l1chain.__main__ import main as chain_main

    chain_main.main(["--config", config_path], standalone_mode=True)


@chain.command("info")
@rpc_option
@json_option
def chain_info(endpoint: str | None, as_json: bool) -> None:
    """Height, tip, mempool size and supply of a running chain."""
    with _chain_client(endpoint) as client:
        _emit(_call(client, "getinfo"), as_json)


@chain.command("tx")
@click.argument("txid")
@rpc_option
@json_option
def chain_tx(txid: str, endpoint: str | None, as_json: bool) -> None:
    """A transaction's status and contents."""
    with _chain_client(endpoint) as client:
        _emit(_call(client, "gettx", txid=txid), as_json)


@chain.command("block")
@click.argument("height", type=int)
@rpc_option
@json_option
def chain_block(height: int, endpoint: str | None, as_json: bool) -> None:
    """A block by height."""
    with _chain_client(endpoint) as client:
        _emit(_call(client, "getblock", height=height), as_json)


@chain.command("mine")
@click.argument("n", type=click.IntRange(1, 10_000), default=1)
@rpc_option
@json_option
def chain_mine(n: int, endpoint: str | None, as_json: bool) -> None:
    """Mine N blocks now."""
    with _chain_client(endpoint) as client:
        _emit(_call(client, "mine", n=n), as_json)


# --- peer ------------------------------------------------------------------------------
@main.group()
def peer() -> None:
    """Lightning peer processes."""


@peer.command("start")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True))
def peer_start(config_path: str) -> None:
    """Run one peer process in the foreground from a JSON config."""
    from peers.__main__ import main as peer_main

    peer_main.main(["--config", config_path], standalone_mode=True)


@main.command("rpc")
@click.argument("endpoint")
@click.argument("verb")
@click.argument("args", nargs=-1)
@json_option
def rpc_call(endpoint: str, verb: str, args: tuple[str, ...], as_json: bool) -> None:
    """Call VERB on any process's control ENDPOINT; ARGS are key=value (JSON values)."""
    from emulator.rpc import RpcClient

    kwargs: dict[str, Any] = {}
    for item in args:
        key, sep, raw = item.partition("=")
        if not sep:
            _fail(f"argument {item!r} is not key=value", 2)
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    with RpcClient(endpoint, timeout=10) as client:
        _emit(_call(client, verb, **kwargs), as_json)


# --- invoices --------------------------------------------------------------------------
@main.group()
def invoice() -> None:
    """BOLT 11 invoices: decode them, show them as QR codes."""


def _decode_invoice(text: str):
    from emulator.crypto import bolt11

    try:
        return bolt11.decode(text)
    except LnemuError as exc:
        _fail(f"invalid invoice: {exc}", 2)


@invoice.command("create")
@click.argument("peer")
@click.argument("amount_msat", type=int, required=False)
@click.option("--description", default="", help="What the payment is for.")
@click.option("--expiry", type=int, default=3600, show_default=True, help="Seconds.")
@click.option("--qr", "show_qr", is_flag=True, help="Also print the invoice as a QR code.")
@click.option("--dir", "run_dir", default="runs/up", show_default=True,
              help="Run directory of the network started by `lnemu up`.")
@json_option
def invoice_create(peer: str, amount_msat: int | None, description: str, expiry: int,
                   show_qr: bool, run_dir: str, as_json: bool) -> None:
    """PEER creates a BOLT 11 invoice for AMOUNT_MSAT (omit it for any amount)."""
    from emulator.cli_network import call
    from emulator.crypto import qr

    args = {"description": description, "expiry": expiry}
    if amount_msat is not None:
        args["amount_msat"] = amount_msat
    result = call(run_dir, peer, "invoice", **args)
    _emit(result, as_json)
    if show_qr:
        click.echo(qr.qr_terminal(qr.invoice_qr_payload(result["bolt11"])), nl=False)


@invoice.command("decode")
@click.argument("bolt11")
@json_option
def invoice_decode(bolt11: str, as_json: bool) -> None:
    """Decode a BOLT 11 invoice and print its fields."""
    inv = _decode_invoice(bolt11)
    fields = {f.name: getattr(inv, f.name) for f in dataclasses.fields(inv)
              if f.name not in ("tag_order", "signature", "include_payee_tag")}
    fields["expires_at"] = inv.timestamp + inv.expiry
    fields["expired"] = inv.is_expired()
    _emit(_plain_invoice(fields), as_json)


def _plain_invoice(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_invoice(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain_invoice(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_invoice(v) for v in value]
    return value


@invoice.command("qr")
@click.argument("bolt11")
@click.option("--png", type=click.Path(dir_okay=False), help="Also write a PNG file.")
@click.option("--svg", type=click.Path(dir_okay=False), help="Also write an SVG file.")
def invoice_qr(bolt11: str, png: str | None, svg: str | None) -> None:
    """Show a BOLT 11 invoice as a QR code in the terminal (and as PNG/SVG files)."""
    from emulator.crypto import qr

    _decode_invoice(bolt11)  # refuse to draw what no wallet could pay
    payload = qr.invoice_qr_payload(bolt11)
    click.echo(qr.qr_terminal(payload), nl=False)
    if png:
        click.echo(f"wrote {qr.write_png(payload, png)}", err=True)
    if svg:
        click.echo(f"wrote {qr.write_svg(payload, svg)}", err=True)


@main.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=int, default=1, show_default=True, help="Draws the faults.")
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--faults", "kinds", default="", help="Comma list of fault kinds "
              "(kill,pause,delay,loss,partition,pause_mining,reorg).")
@click.option("--replay", "replay_dir", type=click.Path(file_okay=False),
              help="Replay the fault schedule of an earlier chaos run.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.")
@click.option("--quiet", is_flag=True)
def chaos(scenario: str | None, seed: int, duration: float, kinds: str, replay_dir: str | None,
          out: str | None, quiet: bool) -> None:
    """Run SCENARIO's traffic while a nemesis injects faults drawn from the seed, heal,
    and check every invariant; a failure prints the seed and the fault history."""
    from emulator import chaos as chaosmod
    from emulator.report import print_result
    from emulator.runner import default_run_dir
    from emulator.scenario import ScenarioError, load_scenario

    if replay_dir:
        scenario, plan = chaosmod.replay_plan(Path(replay_dir))
    if scenario is None:
        _fail("give a SCENARIO or --replay RUN_DIR", 2)
    try:
        spec = load_scenario(scenario)
    except ScenarioError as exc:
        _fail(str(exc), 2)
    spec = dataclasses.replace(spec, name=f"chaos-{spec.name}-s{seed}")
    if spec.traffic:
        spec.traffic = {**spec.traffic, "duration_s": duration}
    if not replay_dir:
        chosen = tuple(k for k in kinds.split(",") if k) or chaosmod.DEFAULT_FAULTS
        unknown = set(chosen) - set(chaosmod.DEFAULT_FAULTS) - {"stop"}
        if unknown:
            _fail(f"unknown fault kind(s) {sorted(unknown)}; known: "
                  f"{', '.join(chaosmod.DEFAULT_FAULTS)}", 2)
        plan = chaosmod.plan(spec, seed, duration, chosen)
    run_dir = Path(out) if out else default_run_dir(spec)
    progress = None if quiet else (lambda message: click.echo(f"… {message}", err=True))
    result = chaosmod.ChaosRunner(spec, run_dir, plan, progress).run()
    print_result(result, quiet)
    if not result.ok:
        click.echo(f"chaos FAILED with seed {plan.seed}; fault history:", err=True)
        for f in plan.faults:
            click.echo(f"  t={f.at:6.2f}s {f.kind} {f.params}"
                       + (f" (error: {f.error})" if f.error else ""), err=True)
    sys.exit(0 if result.ok else 1)


@main.command()
@click.argument("spec")
@click.option("--seed", type=int, default=1, show_default=True)
def topo(spec: str, seed: int) -> None:
    """Print a generated topology (line,5 ring,8 star,6 grid,3,4 complete,4 scalefree,50)
    as scenario TOML."""
    from emulator.topology import parse_topo

    try:
        click.echo(parse_topo(spec, seed=seed).to_toml(), nl=False)
    except LnemuError as exc:
        _fail(str(exc), 2)


def _register() -> None:
    from emulator.cli_network import register
    register(main, _emit)


_register()

if __name__ == "__main__":
    main()
