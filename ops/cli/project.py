"""``ledger project``, ``ledger status``, ``ledger dlq list|replay`` and ``ledger rebuild``."""

from __future__ import annotations

import asyncio
import logging

import typer
from rich.console import Console
from rich.table import Table

from ledger.db import connect
from ops.allocator import return_large_blocks_to_the_os
from ops.cli import context
from projections import PROJECTION_NAMES, ProjectorWorker, lognoise, make_projection
from projections.replay import replay_dead_letters
from projections.status import pricing_status, projection_status, topic_configuration
from projections.storage import DeadLetter, list_dead_letters
from readmodels.reports import UnknownKeyUsage, unknown_key_usage

console = Console()
dlq_app = typer.Typer(help="Dead letters: poison events kept whole.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.command("project")(project)
    root.command("status")(status)
    root.add_typer(dlq_app, name="dlq")
    root.command("rebuild")(rebuild)


def project(
    projection: list[str] = typer.Option(
        [], "--projection", "-p", help="usage, keys or catalog (repeatable); default all"),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus metrics on this port"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING"),
) -> None:
    """Run projector workers until SIGTERM/SIGINT; they exit within 20 s whatever the servers do.

    Waits (with back-off) for PostgreSQL and the brokers when they are not up yet.
    """
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    lognoise.install()  # the Kafka client's reconnect loop: a WARNING every 10 s, with counts
    return_large_blocks_to_the_os()  # freed fetch buffers go back to the OS (ops.allocator)
    names = tuple(projection) or PROJECTION_NAMES
    for name in names:
        make_projection(name)  # unknown names fail here with one line
    worker = ProjectorWorker(context.settings(), dsn=context.database_url(),
                             bootstrap_servers=context.kafka_bootstrap_servers(),
                             projections=names, metrics_port=metrics_port)
    asyncio.run(worker.run())


def status() -> None:
    """Per projection and partition: checkpoint, log end, lag; dead letters; usage for
    unknown keys; pricing; topic config."""
    rows, dead = asyncio.run(projection_status(
        context.settings(), context.database_url(), context.kafka_bootstrap_servers()))
    differences = asyncio.run(topic_configuration(context.settings(),
                                                  context.kafka_bootstrap_servers()))
    pricing = asyncio.run(pricing_status(context.settings(), context.database_url()))
    table = Table(title="projections")
    for column in ("projection", "topic", "partition", "checkpoint", "log end", "lag"):
        table.add_column(column, justify="right" if column != "projection" else "left")
    for row in rows:
        table.add_row(row.projection, row.topic, str(row.partition), str(row.checkpoint),
                      "?" if row.log_end is None else str(row.log_end),
                      "?" if row.lag is None else str(row.lag))
    console.print(table)
    dl = Table(title="dead letters (pending)")
    for column in ("projection", "reason", "count"):
        dl.add_column(column)
    for projection_name, kind, count in dead:
        dl.add_row(projection_name, kind, str(count))
    console.print(dl)
    unknown = asyncio.run(_unknown_key_usage())
    console.print(f"usage for unknown keys: {unknown.describe()}", soft_wrap=True, markup=False)
    console.print(pricing.line(), soft_wrap=True)
    # Informational here (exit 0); `ledger topics ensure` exits 2 on the same differences.
    if not differences:
        console.print("topics: configuration matches the settings")
    for difference in differences:
        console.print(f"topic differs: {difference}", soft_wrap=True)


async def _unknown_key_usage() -> UnknownKeyUsage:
    """Usage recorded for key ids without an api_keys row, over every month."""
    conn = await connect(context.database_url(), context.settings())
    try:
        return await unknown_key_usage(conn)
    finally:
        await conn.close()


@dlq_app.command("list")
def dlq_list(
    projection: str | None = typer.Option(None, help="only this projection"),
    limit: int = typer.Option(50, min=1),
    all_: bool = typer.Option(False, "--all", help="include replayed ones"),
) -> None:
    """List dead letters, oldest first."""
    async def load() -> list[DeadLetter]:
        conn = await connect(context.database_url(), context.settings())
        try:
            return await list_dead_letters(conn, projection=projection,
                                           pending_only=not all_, limit=limit)
        finally:
            await conn.close()

    table = Table(title="dead letters")
    for column in ("id", "projection", "where", "reason", "error", "replayed"):
        table.add_column(column, overflow="fold")
    for d in asyncio.run(load()):
        table.add_row(str(d.id), d.projection, f"{d.topic}[{d.partition}]@{d.offset}",
                      d.error_kind, d.error[:120], "yes" if d.replayed_at else "")
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    id_: int | None = typer.Option(None, "--id", help="replay one dead letter"),
    all_: bool = typer.Option(False, "--all", help="replay every pending dead letter"),
) -> None:
    """Re-decode and apply dead letters (after a fix or an upcaster landed)."""
    if (id_ is None) == (not all_):
        raise typer.BadParameter("give exactly one of --id N or --all")
    ids = None if id_ is None else [id_]
    report = asyncio.run(replay_dead_letters(context.database_url(), ids=ids,
                                             settings=context.settings()))
    console.print(f"replayed {report.replayed}, still failing {report.failed}")


def rebuild(
    projection: str = typer.Argument(..., help="usage, keys or catalog"),
) -> None:
    """Replay the topic from its start into fresh tables and swap them in atomically.

    Refused (one line, exit 1, live tables untouched) when the log no longer holds what the
    live tables were projected from.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from projections.gc_tuning import tune_for_batches
    from projections.rebuild import Rebuilder

    tune_for_batches()  # this process now replays batches of events (see its docstring)
    rebuilder = Rebuilder(make_projection(projection), context.settings(),
                          dsn=context.database_url(),
                          bootstrap_servers=context.kafka_bootstrap_servers())
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    task = bar.add_task(f"replaying {rebuilder.topic}", total=None)

    def report(done: int, total: int) -> None:
        if not bar.live.is_started:  # not before the refusal checks passed
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        applied = asyncio.run(rebuilder.run(report))
    finally:
        bar.stop()
    console.print(f"rebuilt {projection}: {applied} events applied, {rebuilder.skipped} skipped "
                  "(poison or empty records); swapped in atomically")
