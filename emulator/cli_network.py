"""``lnemu`` verbs that act on a network started by ``lnemu up`` (found via --dir)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from emulator.daemon import DEFAULT_DIR

dir_option = click.option("--dir", "run_dir", type=click.Path(file_okay=False),
                          default=str(DEFAULT_DIR), show_default=True,
                          help="Run directory of the network started by `lnemu up`.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                              default=60.0, show_default=True,
                              help="Seconds the payment may take, retries included.")


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def client(run_dir: str, name: str):
    """A control client for peer ``name`` (or ``chain``) of the network in ``run_dir``."""
    from emulator.daemon import network_info
    from emulator.errors import LnemuError
    from emulator.rpc import RpcClient

    try:
        info = network_info(Path(run_dir))
    except LnemuError as exc:
        fail(str(exc), 2)
    if name == "chain":
        return RpcClient(info["chain"]["control"], timeout=60)
    if name not in info["peers"]:
        fail(f"unknown peer {name!r}; peers: {', '.join(info['peers'])}", 2)
    return RpcClient(info["peers"][name]["control"], timeout=60)


def node_id(run_dir: str, name: str) -> str:
    from emulator.daemon import network_info
    from emulator.errors import LnemuError
    try:
        peers = network_info(Path(run_dir))["peers"]
    except LnemuError as exc:
        fail(str(exc), 2)
    if name not in peers:
        fail(f"unknown peer {name!r}; peers: {', '.join(peers)}", 2)
    return peers[name]["node_id"]


def call_client(rpc: Any, op: str, **args: Any) -> Any:
    """Call ``op`` through ``rpc``; errors exit 1 (2 for bad input) with the message."""
    from emulator.rpc import RpcError, RpcTimeout

    try:
        return rpc.call(op, **args)
    except RpcError as exc:
        fail(str(exc), 2 if exc.code in ("bad_request", "not_found") else 1)
    except RpcTimeout as exc:
        fail(str(exc), 1)


def call(run_dir: str, name: str, op: str, **args: Any) -> Any:
    """Call ``op`` on a process of the up network."""
    with client(run_dir, name) as rpc:
        return call_client(rpc, op, **args)


def register(main: click.Group, emit: Any) -> None:
    """Add the network verbs to the ``lnemu`` group."""

    @main.command()
    @click.argument("scenario", type=click.Path(dir_okay=False))
    @dir_option
    def up(scenario: str, run_dir: str) -> None:
        """Start SCENARIO's network (chain, peers, channels) in the background."""
        from emulator.daemon import up as start
        from emulator.errors import LnemuError
        from emulator.scenario import ScenarioError, load_scenario

        try:
            spec = load_scenario(scenario)
        except ScenarioError as exc:
            fail(str(exc), 2)
        try:
            info = start(spec, Path(run_dir))
        except LnemuError as exc:
            fail(str(exc), 1)
        click.echo(f"network {info['scenario']!r} is up: {len(info['peers'])} peers, "
                   f"supervisor pid {info['pid']}, run directory {info['run_dir']}")

    @main.command()
    @dir_option
    def down(run_dir: str) -> None:
        """Stop the network started by `lnemu up`; no process is left behind."""
        from emulator.daemon import down as stop
        from emulator.errors import LnemuError

        try:
            pid = stop(Path(run_dir))
        except LnemuError as exc:
            fail(str(exc), 1)
        click.echo(f"stopped supervisor {pid}")

    @main.command()
    @dir_option
    @json_option
    def status(run_dir: str, as_json: bool) -> None:
        """Peers, channels and balances of the network started by `lnemu up`."""
        from emulator.daemon import network_info
        from emulator.errors import LnemuError
        try:
            peers = network_info(Path(run_dir))["peers"]
        except LnemuError as exc:
            fail(str(exc), 2)
        rows = {}
        for name in peers:
            info = call(run_dir, name, "getinfo")
            chans = call(run_dir, name, "listchannels")
            rows[name] = {"id": info["id"], "blockheight": info["blockheight"],
                          "wallet_sat": info["confirmed_sat"],
                          "channels": [{"peer": c["peer_id"], "state": c["state"],
                                        "capacity_sat": c["capacity_sat"],
                                        "local_msat": c.get("local_msat"),
                                        "remote_msat": c.get("remote_msat"),
                                        "channel_id": c["channel_id"]} for c in chans]}
        if as_json:
            emit(rows, True)
            return
        _status_table(rows)

    _register_channel(main, emit)
    _register_payments(main, emit)


def _status_table(rows: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="lnemu status")
    for column in ("peer", "wallet (sat)", "channel", "state", "local (msat)", "remote (msat)"):
        table.add_column(column)
    for name, row in rows.items():
        first = True
        for ch in row["channels"] or [None]:
            table.add_row(name if first else "", f"{row['wallet_sat']:,}" if first else "",
                          ch["channel_id"].hex()[:12] if ch else "-",
                          ch["state"] if ch else "", f"{ch['local_msat']:,}" if ch and
                          ch["local_msat"] is not None else "",
                          f"{ch['remote_msat']:,}" if ch and ch["remote_msat"] is not None
                          else "")
            first = False
    Console().print(table)


def _register_channel(main: click.Group, emit: Any) -> None:
    @main.group()
    def channel() -> None:
        """Channels of a running network: open, close, list."""

    @channel.command("open")
    @click.argument("peer")
    @click.argument("to")
    @click.argument("amount_sat", type=int)
    @click.option("--push-msat", type=int, default=0)
    @click.option("--private", is_flag=True, help="Do not announce the channel.")
    @dir_option
    @json_option
    def channel_open(peer, to, amount_sat, push_msat, private, run_dir, as_json) -> None:
        """PEER opens a channel of AMOUNT_SAT to TO (mined by the chain's interval)."""
        emit(call(run_dir, peer, "fundchannel", node_id=node_id(run_dir, to),
                  amount_sat=amount_sat, push_msat=push_msat, announce=not private), as_json)

    @channel.command("close")
    @click.argument("peer")
    @click.argument("channel_id")
    @click.option("--force", is_flag=True, help="Broadcast our commitment (unilateral close).")
    @dir_option
    @json_option
    def channel_close(peer, channel_id, force, run_dir, as_json) -> None:
        """PEER closes CHANNEL_ID, cooperatively unless --force."""
        emit(call(run_dir, peer, "close", channel_id=channel_id, force=force), as_json)

    @channel.command("list")
    @click.argument("peer")
    @dir_option
    @json_option
    def channel_list(peer, run_dir, as_json) -> None:
        """PEER's channels: balances, reserves, HTLCs in flight, state."""
        emit(call(run_dir, peer, "listchannels"), as_json)


def _register_payments(main: click.Group, emit: Any) -> None:
    @main.command()
    @click.argument("peer")
    @click.argument("bolt11")
    @click.option("--amount-msat", type=int, help="For an invoice without an amount.")
    @timeout_option
    @dir_option
    @json_option
    def pay(peer, bolt11, amount_msat, timeout, run_dir, as_json) -> None:
        """PEER pays a BOLT 11 invoice (exit 1 if the payment fails)."""
        args = {"bolt11": bolt11, "timeout": timeout}
        if amount_msat is not None:
            args["amount_msat"] = amount_msat
        emit(call(run_dir, peer, "pay", **args), as_json)

    @main.command()
    @click.argument("peer")
    @click.argument("to")
    @click.argument("amount_msat", type=int)
    @timeout_option
    @dir_option
    @json_option
    def keysend(peer, to, amount_msat, timeout, run_dir, as_json) -> None:
        """PEER pays TO without an invoice (keysend)."""
        emit(call(run_dir, peer, "keysend", node_id=node_id(run_dir, to),
                  amount_msat=amount_msat, timeout=timeout), as_json)

    @main.command()
    @click.argument("sender")
    @click.argument("to")
    @click.argument("text")
    @timeout_option
    @dir_option
    @json_option
    def msg(sender, to, text, timeout, run_dir, as_json) -> None:
        """SENDER sends TEXT to TO, paying every hop to carry it."""
        emit(call(run_dir, sender, "sendmessage", node_id=node_id(run_dir, to), text=text,
                  timeout=timeout), as_json)

    @main.command()
    @click.argument("peer")
    @dir_option
    @json_option
    def inbox(peer, run_dir, as_json) -> None:
        """Messages PEER received, with the verified sender."""
        emit(call(run_dir, peer, "inbox"), as_json)

    @main.command()
    @click.argument("peer")
    @dir_option
    @json_option
    def liquidity(peer, run_dir, as_json) -> None:
        """PEER's outbound (can pay) and inbound (can be paid) liquidity per channel."""
        emit(call(run_dir, peer, "liquidity"), as_json)

    @main.command()
    @click.argument("peer")
    @click.argument("out_channel")
    @click.argument("in_channel")
    @click.argument("amount_msat", type=int)
    @dir_option
    @json_option
    def rebalance(peer, out_channel, in_channel, amount_msat, run_dir, as_json) -> None:
        """PEER moves AMOUNT_MSAT of outbound from OUT_CHANNEL to IN_CHANNEL (a circular
        payment to itself)."""
        emit(call(run_dir, peer, "rebalance", out_channel=out_channel, in_channel=in_channel,
                  amount_msat=amount_msat), as_json)

    @main.command()
    @click.argument("peer")
    @click.argument("channel_id")
    @dir_option
    @json_option
    def cheat(peer, channel_id, run_dir, as_json) -> None:
        """PEER broadcasts a revoked commitment of CHANNEL_ID (to watch the penalty)."""
        emit(call(run_dir, peer, "cheat", channel_id=channel_id), as_json)
