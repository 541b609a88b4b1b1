"""``ledger reconcile [--month YYYY-MM] [--key ID] [--repair] [--format table|json]``.

Exit status: 1 when summaries differ from usage_records (without ``--repair``), 0 when they
match or ``--repair`` made them match. The SQL is in ``projections/reconcile.py``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from uuid import UUID

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ledger.db import connect
from ops.cli import context
from projections.exceptions import ReconcileError
from projections.reconcile import Difference, Scope, compare, describe, repair

console = Console()


def register(root: typer.Typer) -> None:
    root.command("reconcile")(reconcile)


def reconcile(
    month: str | None = typer.Option(None, help="only this UTC month, YYYY-MM (default: all)"),
    key: UUID | None = typer.Option(None, help="only this key id"),
    repair_: bool = typer.Option(
        False, "--repair",
        help="recompute the differing summaries from usage_records (safe while projectors run)"),
    format_: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Compare monthly_usage_summaries with usage_records; exit 1 on any difference."""
    if format_ not in ("table", "json"):
        raise typer.BadParameter(f"--format takes table or json, got {format_!r}")
    scope = Scope(month=_month(month), key_id=key)
    differences = asyncio.run(_run(scope, repair_))
    if format_ == "json":
        typer.echo(json.dumps({
            "month": None if scope.month is None else f"{scope.month:%Y-%m}",
            "key": None if key is None else str(key),
            "repaired": repair_ and bool(differences),
            "differences": [_as_json(d) for d in differences],
        }, indent=2))
    else:
        _print_table(scope, differences, repaired=repair_)
    if differences and not repair_:
        raise typer.Exit(1)


def _month(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise typer.BadParameter(f"--month takes YYYY-MM, got {text!r}") from None


async def _run(scope: Scope, repairing: bool) -> list[Difference]:
    conn = await connect(context.database_url(), context.settings())  # one-line errors
    try:
        return await (repair(conn, scope) if repairing else compare(conn, scope))
    except asyncpg.UndefinedTableError as exc:
        raise ReconcileError(f"{exc}; run `ledger migrate` first") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise ReconcileError(f"reconcile failed: {type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()


def _as_json(d: Difference) -> dict[str, str]:
    return {"api_key_id": str(d.api_key_id), "model": d.model, "month": f"{d.month:%Y-%m}",
            "column": d.column, "summary": describe(d.summary, d.column),
            "records": describe(d.records, d.column)}


def _print_table(scope: Scope, differences: list[Difference], *, repaired: bool) -> None:
    where = " ".join(part for part in (
        f"month {scope.month:%Y-%m}" if scope.month else "",
        f"key {scope.key_id}" if scope.key_id else "") if part) or "all months and keys"
    if not differences:
        console.print(f"monthly_usage_summaries match usage_records ({where})")
        return
    table = Table(title=("repaired" if repaired else "differences") + f" ({where})")
    for column in ("key", "model", "month", "column", "summary", "records"):
        table.add_column(column, overflow="fold",
                         justify="right" if column in ("summary", "records") else "left")
    for d in differences:
        table.add_row(str(d.api_key_id), d.model, f"{d.month:%Y-%m}", d.column,
                      describe(d.summary, d.column), describe(d.records, d.column))
    console.print(table)
    groups = len({d.group for d in differences})
    if repaired:
        console.print(f"recomputed {groups} summaries from usage_records "
                      f"({len(differences)} differences); read models notified")
    else:
        console.print(f"{len(differences)} differences in {groups} summaries; "
                      "`ledger reconcile --repair` recomputes them from usage_records")
