"""``ledger demo``: brings up what it needs and shows the ledger end to end."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from ops.cli import context


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)


def demo(
    events: int = typer.Option(1_000_000, min=1, help="usage events to simulate"),
    keys: int = typer.Option(1_000, min=10, help="API keys to create"),
    seed: int = typer.Option(42, help="makes a run repeatable"),
) -> None:
    """Catalog, keys, Zipf traffic with duplicates, poison and revocations; then a report.

    Ends with a reconciliation of what was emitted against usage_records and
    monthly_usage_summaries; exits 1 when they differ. Ctrl-C stops it cleanly.
    """
    from ops.demo import DemoRunner, print_report

    console = Console()
    runner = DemoRunner(context.settings(), events=events, keys=keys, seed=seed,
                        console=console)

    async def run() -> bool:
        result = await runner.run()
        console.print("[bold]5/5[/] report")
        outcome = await print_report(console, runner.dsn, result)
        return outcome.matches

    try:
        matched = asyncio.run(run())
    except KeyboardInterrupt:
        runner.stop_workers()
        console.print("stopped: workers finished their batch and exited; "
                      "`ledger status` shows where they are")
        raise typer.Exit(130) from None
    if not matched:
        raise typer.Exit(1)
