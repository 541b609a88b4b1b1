"""``ledger migrate``: apply the pending files of migrations/ to DATABASE_URL."""

from __future__ import annotations

import asyncio

import asyncpg
import typer
from rich.console import Console

from ledger.db import connect, one_line
from ops.cli import context
from ops.exceptions import MigrationError
from ops.migrate import Migrator

console = Console()


def register(root: typer.Typer) -> None:
    root.command("migrate")(migrate)


def migrate() -> None:
    """Apply pending migrations (safe to run concurrently and repeatedly)."""
    applied = asyncio.run(_migrate())
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    else:
        console.print("schema is up to date")


async def _migrate() -> list[str]:
    settings = context.settings()
    # Its own statement timeout: a migration may rewrite a large table, and a second runner
    # waits for the first on the advisory lock.
    limit = settings.db_migrate_statement_timeout
    conn = await connect(context.database_url(), settings, statement_timeout=limit)
    try:
        return [f"{m.version:04d}_{m.name}" for m in await Migrator(conn).migrate()]
    except (MigrationError, asyncpg.QueryCanceledError) as exc:
        if "statement timeout" not in str(exc):
            raise
        raise MigrationError(f"{one_line(exc)} (DB_MIGRATE_STATEMENT_TIMEOUT is "
                             f"{limit.total_seconds():g}s; raise it, or 0 for none)") from exc
    finally:
        await conn.close()
