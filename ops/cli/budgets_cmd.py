"""``ledger budgets set | remove | list | alerts``: spending ceilings per key or owner."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.table import Table

from ledger import budgets
from ledger.events import EventBase
from ledger.exceptions import BudgetInputError
from ledger.producer import LedgerProducer
from ops.cli import context
from ops.cli.keys_cmd import _ALLOW_SPOOLED, _emit_one, _spooled
from readmodels import Alert, BudgetRow, ReadModels

budgets_app = typer.Typer(help="Budgets: spending ceilings per key or owner, per period.",
                          no_args_is_help=True)
console = Console()
# The option of `budgets set` each field of ledger.budgets' checks comes from.
_OPTION_OF_FIELD = {"scope": "scope", "limit_usd": "--limit", "period": "--period",
                    "timezone": "--tz", "alert_thresholds": "--alert", "--alert": "--alert"}


def register(root: typer.Typer) -> None:
    root.add_typer(budgets_app, name="budgets")


def _bad_option(exc: BudgetInputError) -> typer.BadParameter:
    """The CLI's entry point prints it as one line naming the option, exit 1."""
    option = _OPTION_OF_FIELD.get(exc.field, exc.field)
    return typer.BadParameter(exc.problem, param_hint=f"'{option}'")  # quoted, as click does


def _thresholds(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BudgetInputError(
            "--alert", f"takes percents separated by commas, got {text!r}") from None
    return budgets.check_thresholds(values)


async def _scope_exists(scope: str) -> bool:
    async with ReadModels.open(context.database_url()) as rm:
        return await rm.budgets.scope_exists(scope)


@budgets_app.command("set")
def set_budget(
    scope: str = typer.Argument(..., help="key:<api_key_id> or owner:<name>"),
    limit: str = typer.Option(..., "--limit", help="USD per period, more than 0"),
    period: str = typer.Option(..., "--period", help="day, week, month or total"),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone of the calendar periods"),
    alert: str = typer.Option("50,80,100", "--alert", help="alert thresholds in percent"),
    allow_spooled: bool = _ALLOW_SPOOLED,
) -> None:
    """Set the scope's budget (replacing any earlier one); nothing is emitted on bad input."""
    try:
        canonical = budgets.canonical_scope(scope)
        limit_usd = budgets.check_limit(limit)
        budgets.check_period(period)
        budgets.zone(tz)
        thresholds = _thresholds(alert)
    except BudgetInputError as exc:
        raise _bad_option(exc) from None
    if not asyncio.run(_scope_exists(canonical)):
        raise typer.BadParameter(
            f"{canonical!r} names no key (key:<id>) or no key's owner (owner:<name>)",
            param_hint="'scope'")

    def build(p: LedgerProducer) -> EventBase:
        return p.events.set_budget(scope=canonical, limit_usd=limit_usd, period=period,
                                   timezone=tz, alert_thresholds=thresholds)

    _, still_spooled = asyncio.run(_emit_one(build))
    if still_spooled:
        _spooled(f"the budget of {canonical}", "it does not apply", allow_spooled)
        return
    console.print(f"budget of {canonical} set: {limit_usd} USD per {period} ({tz})")


@budgets_app.command("remove")
def remove_budget(scope: str = typer.Argument(..., help="key:<api_key_id> or owner:<name>"),
                  allow_spooled: bool = _ALLOW_SPOOLED) -> None:
    """Remove the scope's budget (a key's max_budget_usd still applies)."""
    try:
        canonical = budgets.canonical_scope(scope)
    except BudgetInputError as exc:
        raise _bad_option(exc) from None
    _, still_spooled = asyncio.run(_emit_one(lambda p: p.events.remove_budget(scope=canonical)))
    if still_spooled:
        _spooled(f"the removal of {canonical}'s budget", "it still applies", allow_spooled)
        return
    console.print(f"budget of {canonical} removed")


def _row_json(row: BudgetRow) -> dict[str, object]:
    reset = row.next_reset
    return {"scope": row.scope, "origin": row.origin, "period": row.period,
            "timezone": row.timezone, "limit_usd": str(row.limit_usd),
            "spent_usd": str(row.spent), "reserved_usd": str(row.reserved),
            "remaining_usd": str(row.remaining), "overrun_usd": str(row.overrun_usd),
            "period_start": row.period_start.isoformat(),
            "next_reset": reset.isoformat() if reset else None,
            "alert_thresholds": list(row.alert_thresholds)}


@budgets_app.command("list")
def list_budgets(format_: str = typer.Option("table", "--format", help="table or json")) -> None:
    """Every ceiling (budgets and keys' max_budget_usd) with this period's spend."""
    if format_ not in ("table", "json"):
        raise typer.BadParameter(f"--format takes table or json, got {format_!r}")

    async def load() -> list[BudgetRow]:
        async with ReadModels.open(context.database_url()) as rm:
            return await rm.budgets.rows()

    rows = asyncio.run(load())
    if format_ == "json":
        typer.echo(json.dumps([_row_json(r) for r in rows], indent=2))
        return
    table = Table(title="budgets")
    for column in ("scope", "period", "limit USD", "spent", "reserved", "remaining",
                   "overrun", "next reset"):
        table.add_column(column, overflow="fold")
    for row in rows:
        reset = row.next_reset
        period = row.period if row.origin == "budget" else f"{row.period} (max_budget_usd)"
        table.add_row(row.scope, f"{period} {row.timezone}", str(row.limit_usd), str(row.spent),
                      str(row.reserved), str(row.remaining),
                      str(row.overrun_usd) if row.overrun_usd else "",
                      reset.isoformat(timespec="minutes") if reset else "never")
    console.print(table)


@budgets_app.command("alerts")
def list_alerts(format_: str = typer.Option("table", "--format", help="table or json")) -> None:
    """Thresholds crossed, each once per scope, period and threshold."""
    if format_ not in ("table", "json"):
        raise typer.BadParameter(f"--format takes table or json, got {format_!r}")

    async def load() -> list[Alert]:
        async with ReadModels.open(context.database_url()) as rm:
            return await rm.budgets.alerts()

    alerts = asyncio.run(load())
    if format_ == "json":
        typer.echo(json.dumps([{
            "scope": a.scope, "period": a.period, "period_start": a.period_start.isoformat(),
            "threshold": a.threshold, "limit_usd": str(a.limit_usd), "spent_usd": str(a.spent),
            "event_id": str(a.event_id), "crossed_at": a.crossed_at.isoformat(),
        } for a in alerts], indent=2))
        return
    table = Table(title="budget alerts")
    for column in ("crossed", "scope", "period start", "threshold", "spent / limit USD"):
        table.add_column(column, overflow="fold")
    for a in alerts:
        table.add_row(a.crossed_at.isoformat(timespec="seconds"), f"{a.scope} ({a.period})",
                      a.period_start.isoformat(timespec="minutes"), f"{a.threshold}%",
                      f"{a.spent} / {a.limit_usd}")
    console.print(table)
