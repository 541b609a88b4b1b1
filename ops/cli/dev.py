"""``ledger dev up|down|status|env``: the embedded PostgreSQL and broker for development."""

from __future__ import annotations

import asyncio

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ledger.db import connect
from ledger.exceptions import LedgerError
from ledger.topics import describe_topics, ensure_topics, topic_differences, topic_specs
from ops.cli import context
from ops.migrate import Migrator

app = typer.Typer(
    help="The embedded dev stack (PostgreSQL 18 + Tansu broker).", no_args_is_help=True
)
console = Console()


@app.command()
def up() -> None:
    """Start what is not configured from outside, wait until it answers, create the topics."""
    stack = context.stack()
    stack.up()
    specs = topic_specs(stack.settings)
    created = asyncio.run(ensure_topics(stack.kafka_bootstrap_servers, specs))
    differences = asyncio.run(topic_differences(stack.kafka_bootstrap_servers, specs))
    state = stack.state()
    for service in (state.postgres, state.kafka):
        how = "started/running" if service.managed else "configured (not managed)"
        console.print(f"{service.name}: {how} at {service.url}")
    if created:
        console.print(f"topics created: {', '.join(created)}")
    for difference in differences:  # a dev stack still starts; `topics ensure` exits 2
        console.print(f"topic differs from settings: {difference}")


@app.command()
def down() -> None:
    """Stop only what `ledger dev up` started."""
    stack = context.stack()
    stack.down()
    console.print("embedded stack stopped" if stack.manages_postgres or stack.manages_kafka
                  else "nothing to stop: both servers are configured from outside")


@app.command()
def env() -> None:
    """Print shell exports for DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS."""
    typer.echo(context.stack().env_exports(), nl=False)


@app.command()
def status() -> None:
    """PostgreSQL version, broker, topics with partitions, applied migrations."""
    asyncio.run(_status())


async def _status() -> None:
    stack = context.stack()
    state = stack.state()
    table = Table(title="ledger dev stack")
    for column in ("service", "url", "managed", "state", "detail"):
        table.add_column(column)
    pg_detail, migrations = "", []
    if state.postgres.running:
        try:
            conn = await connect(stack.database_url, stack.settings)
            try:
                version = conn.get_server_version()  # from the handshake: no query
                pg_detail = f"{version.major}.{version.minor}"
                migrations = await Migrator(conn).applied()
            finally:
                await conn.close()
        except (LedgerError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            pg_detail = f"not answering: {exc}"
    topics: dict[str, int | None] = {}
    if state.kafka.running:
        names = [spec.name for spec in topic_specs(stack.settings)]
        try:
            topics = await describe_topics(stack.kafka_bootstrap_servers, names)
        except Exception as exc:  # any client error means "not answering" for a status line
            topics = {}
            state.notes.append(f"kafka not answering: {exc}")
    table.add_row("postgres", state.postgres.url, str(state.postgres.managed),
                  "running" if state.postgres.running else "stopped", f"PostgreSQL {pg_detail}")
    table.add_row("kafka", state.kafka.url, str(state.kafka.managed),
                  "running" if state.kafka.running else "stopped", "Tansu (Kafka protocol)"
                  if state.kafka.managed else "external")
    console.print(table)
    if topics:
        topic_table = Table(title="topics")
        topic_table.add_column("topic")
        topic_table.add_column("partitions", justify="right")
        for name, count in topics.items():
            topic_table.add_row(name, "missing" if count is None else str(count))
        console.print(topic_table)
    migration_table = Table(title="applied migrations")
    for column in ("version", "name", "applied_at", "checksum"):
        migration_table.add_column(column)
    for m in migrations:
        applied_at = m.applied_at.isoformat(timespec="seconds")
        migration_table.add_row(f"{m.version:04d}", m.name, applied_at, m.checksum[:12])
    console.print(migration_table)
    for note in state.notes:
        console.print(note)
