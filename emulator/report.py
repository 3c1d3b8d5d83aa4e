"""Printing a run's result for people: balances, checks, the run directory."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from emulator.runner import RunResult


def print_result(result: RunResult, quiet: bool = False) -> None:
    """Print balances and checks (unless quiet), then the verdict and the run directory."""
    console = Console()
    if not quiet and result.balances:
        table = Table(title="On-chain balances")
        table.add_column("peer")
        table.add_column("balance (sat)", justify="right")
        for name, sat in result.balances.items():
            table.add_row(name, f"{sat:,}")
        console.print(table)
    if not quiet:
        for check in result.checks:
            mark = "[green]ok[/]" if check.ok else "[red]FAIL[/]"
            console.print(f"{mark}  {check.name}: {check.detail}", highlight=False)
    if result.error:
        console.print(f"[red]error:[/] {result.error}", highlight=False)
    verdict = "[green]PASSED[/]" if result.ok else "[red]FAILED[/]"
    console.print(f"{verdict}  run directory: {result.run_dir}", highlight=False)
