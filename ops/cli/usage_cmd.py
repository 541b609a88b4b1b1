"""``ledger usage report``: a month's spend by key, model or provider, from the summaries."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any, cast
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from ledger.db import connect
from ops.cli import context
from readmodels.reports import GroupBy, UnknownKeyUsage, spend_report, unknown_key_usage

usage_app = typer.Typer(help="Usage and spend, read from the monthly summaries.",
                        no_args_is_help=True)
console = Console()


def register(root: typer.Typer) -> None:
    root.add_typer(usage_app, name="usage")


def _month(text: str | None) -> date:
    if text is None:
        today = datetime.now(UTC).date()
        return today.replace(day=1)
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise typer.BadParameter(f"--month takes YYYY-MM, got {text!r}") from None


# How a report names usage whose key id has no api_key.created projected (yet).
UNKNOWN_KEY_NAME = "(unknown key)"


@usage_app.command("report")
def report(
    month: str | None = typer.Option(None, help="YYYY-MM (default: the current month)"),
    key: UUID | None = typer.Option(None, help="only this key"),
    by: str = typer.Option("key", help="key, model or provider"),
    top: int | None = typer.Option(None, min=1, help="only the N most expensive rows"),
    format_: str = typer.Option("table", "--format", help="table, csv or json"),
) -> None:
    """Spend for a month grouped by key, model or provider, most expensive first."""
    if by not in ("key", "model", "provider"):
        raise typer.BadParameter(f"--by takes key, model or provider, got {by!r}")
    if format_ not in ("table", "csv", "json"):
        raise typer.BadParameter(f"--format takes table, csv or json, got {format_!r}")
    first = _month(month)
    group = cast(GroupBy, by)  # checked just above

    async def load() -> tuple[list[dict[str, Any]], UnknownKeyUsage]:
        conn = await connect(context.database_url(), context.settings())
        try:
            rows = await spend_report(conn, month=first, by=group, key_id=key, top=top)
            unknown = await unknown_key_usage(conn, month=first, key_id=key)
        finally:
            await conn.close()
        return [{by: r.label,
                 **({"name": r.name, "unknown_key": r.unknown_key} if by == "key" else {}),
                 "requests": r.requests, "errors": r.errors, "prompt_tokens": r.prompt_tokens,
                 "completion_tokens": r.completion_tokens, "cost_usd": str(r.cost_usd),
                 "unpriced_requests": r.unpriced_requests} for r in rows], unknown

    rows, unknown = asyncio.run(load())
    if format_ == "json":
        typer.echo(json.dumps({"month": first.strftime("%Y-%m"), "by": by, "rows": rows,
                               "unknown_keys": {"requests": unknown.requests,
                                                "cost_usd": str(unknown.cost_usd),
                                                "key_ids": unknown.key_ids,
                                                "unpriced_requests": unknown.unpriced_requests}},
                              indent=2))
        return
    # Table and CSV: a key that api_keys does not hold is named "(unknown key)", no flag column.
    for row in rows:
        if row.pop("unknown_key", False):
            row["name"] = UNKNOWN_KEY_NAME
    columns = list(rows[0]) if rows else [by, "requests", "cost_usd"]
    if format_ == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(out.getvalue(), nl=False)
        return
    table = Table(title=f"spend {first:%Y-%m} by {by}")
    for column in columns:
        table.add_column(column, overflow="fold",
                         justify="left" if column in (by, "name") else "right")
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] is not None else "" for c in columns))
    console.print(table)
    if unknown.requests:
        console.print(f"unknown keys: {unknown.describe()}", soft_wrap=True, markup=False)
