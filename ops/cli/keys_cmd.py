"""``ledger keys create | revoke | list | show``: key events out, key reads in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ledger.events import EventBase
from ledger.keys import generate_key, hash_key
from ledger.producer import EventBuilder, LedgerProducer
from ops.cli import context
from readmodels import ApiKey, ReadModels

keys_app = typer.Typer(help="API keys: only their SHA-256 hash is ever stored.",
                       no_args_is_help=True)
console = Console()


def register(root: typer.Typer) -> None:
    root.add_typer(keys_app, name="keys")


def _parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"--expires takes YYYY-MM-DD or an ISO time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The commands that open a producer on the CLI's spool, and so deliver what an earlier one
# left there; `keys list` / `keys show` only read PostgreSQL and open none.
DELIVERING_COMMANDS = ("`ledger keys create`, `ledger keys revoke`, `ledger budgets set` and "
                       "`ledger budgets remove`")
# Exit status of a key command whose event is durable in the spool but not in Kafka yet.
EXIT_SPOOLED = 3
_SOURCE = "ledger-cli"  # the source of the events the CLI emits
# The CLI waits this long at exit for a spool backlog to drain to a broker that answers.
_CLOSE_TIMEOUT_S = 5.0
_ALLOW_SPOOLED = typer.Option(False, "--allow-spooled",
                              help="exit 0 even if the event is only spooled, not delivered")


def _quiet_producer_logs() -> None:
    """The command's own last line says what happened to its event; aiokafka's error on
    every reconnect attempt and the producer's retry messages would bury it. Spool
    recovery (damage quarantined) still logs: that is worth a line of its own."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    for name in ("ledger.producer.producer", "ledger.producer.spooling"):
        logging.getLogger(name).setLevel(logging.ERROR)


async def _emit_one(build: Callable[[LedgerProducer], EventBase]) -> tuple[EventBase, bool]:
    """Emit one event; return it and whether it is still only in the spool at exit."""
    _quiet_producer_logs()
    producer = LedgerProducer.from_settings(context.resolved_settings(), source=_SOURCE,
                                            close_timeout_s=_CLOSE_TIMEOUT_S)
    async with producer:
        event = build(producer)
        delivery = await producer.emit_and_wait(event)
    stats = producer.spool_stats()
    # Spooled, then resent while close() waited for the spool to drain: delivered.
    still_spooled = delivery.status == "spooled" and stats is not None and stats.pending_bytes > 0
    return event, still_spooled


def _spooled(what: str, consequence: str, allow_spooled: bool) -> None:
    """Say plainly that the event is durable but not delivered; exit non-zero unless allowed."""
    settings = context.resolved_settings()
    message = (f"{what} is spooled in {settings.resolved_spool_dir}, not yet delivered to Kafka "
               f"at {settings.kafka_bootstrap_servers}: {consequence} until a producer using "
               f"that spool reaches the broker ({DELIVERING_COMMANDS} do)")
    if allow_spooled:
        console.print(f"note: {message}", soft_wrap=True)
        return
    typer.echo(f"error: {message}; pass --allow-spooled to accept that", err=True)
    raise typer.Exit(EXIT_SPOOLED)


# The option of `keys create` each field of ApiKeyCreated comes from.
_OPTION_OF_FIELD = {"name": "--name", "owner": "--owner", "allowed_models": "--models",
                    "max_budget_usd": "--budget", "expires_at": "--expires"}


def _bad_option(exc: ValidationError) -> typer.BadParameter:
    """The first complaint about the first field, naming its option: pydantic lists one per
    branch of a union, which says the same thing several times."""
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error["loc"] else "value"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    shown = str(given) if isinstance(given, Decimal) else repr(given)
    return typer.BadParameter(f"{message} (got {shown})",
                              param_hint=f"'{_OPTION_OF_FIELD.get(field, field)}'")


@keys_app.command("create")
def create(
    name: str = typer.Option(..., help="a name people recognise"),
    owner: str | None = typer.Option(None),
    models: str | None = typer.Option(None, help="allowed models, comma separated (default all)"),
    budget: Decimal | None = typer.Option(None, help="monthly budget in USD"),
    expires: str | None = typer.Option(None, help="YYYY-MM-DD or ISO time (UTC if no zone)"),
    allow_spooled: bool = _ALLOW_SPOOLED,
) -> None:
    """Create a key and print its plaintext ONCE; only its hash is stored.

    Exits 3 if the create event could only be spooled (the broker did not answer): the key
    is printed, since it will work once the event is delivered, but does not work yet.
    """
    plaintext = generate_key()
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else []
    expires_at = _parse_expiry(expires)

    try:  # before any producer opens: bad input leaves nothing in the spool
        event = EventBuilder(_SOURCE).create_key(
            name=name, key_hash=hash_key(plaintext), owner=owner, allowed_models=allowed,
            max_budget_usd=budget, expires_at=expires_at)
    except ValidationError as exc:
        raise _bad_option(exc) from None

    _, still_spooled = asyncio.run(_emit_one(lambda _producer: event))
    console.print(f"key id:  {event.api_key_id}")
    console.print(f"api key: {plaintext}")
    console.print("[bold]Store the api key now: it is not kept and cannot be shown again.[/]")
    if still_spooled:
        _spooled(f"the create event of key {event.api_key_id}", "the key does not work",
                 allow_spooled)


@keys_app.command("revoke")
def revoke(key_id: UUID, reason: str | None = typer.Option(None),
           allow_spooled: bool = _ALLOW_SPOOLED) -> None:
    """Revoke a key for good; every read model refuses it once the projector applied it.

    Exits 3 if the revocation could only be spooled: the key still works until then.
    """
    _, still_spooled = asyncio.run(_emit_one(
        lambda p: p.events.revoke_key(api_key_id=key_id, reason=reason)))
    if still_spooled:
        _spooled(f"the revocation of key {key_id}", "the key still works", allow_spooled)
        return
    console.print(f"revocation of {key_id} emitted")


def _state(key: ApiKey) -> str:
    if key.revoked:
        return "revoked"
    if not key.enabled:
        return "disabled"
    if key.expired(datetime.now(UTC)):
        return "expired"
    return "active"


@keys_app.command("list")
def list_keys(
    owner: str | None = typer.Option(None),
    limit: int = typer.Option(50, min=1, max=1000),
    after: UUID | None = typer.Option(None, help="continue after this key id"),
) -> None:
    """Keys ordered by id, a page at a time."""
    async def load() -> tuple[list[ApiKey], UUID | None]:
        async with ReadModels.open(context.database_url()) as rm:
            page = await rm.keys.list(owner=owner, after=after, limit=limit)
            return list(page.items), page.next_after

    items, next_after = asyncio.run(load())
    table = Table(title="api keys")
    for column in ("id", "name", "owner", "state", "budget USD", "models", "expires"):
        table.add_column(column, overflow="fold")
    for key in items:
        table.add_row(str(key.id), key.name, key.owner or "", _state(key),
                      str(key.max_budget_usd or ""), ",".join(sorted(key.allowed_models)) or "*",
                      key.expires_at.isoformat(timespec="minutes") if key.expires_at else "")
    console.print(table)
    if next_after:
        console.print(f"more: --after {next_after}")


@keys_app.command("show")
def show(key_id: UUID) -> None:
    """One key with its metadata and month-to-date spend."""
    async def load() -> tuple[ApiKey | None, Decimal]:
        async with ReadModels.open(context.database_url()) as rm:
            key = await rm.keys.get(key_id)
            spend = await rm.usage.month_to_date_spend(key_id) if key else Decimal(0)
            return key, spend

    key, spend = asyncio.run(load())
    if key is None:
        console.print(f"no key {key_id}")
        raise typer.Exit(1)
    budget = "none" if key.max_budget_usd is None else f"{key.max_budget_usd}"
    console.print(f"id:              {key.id}\nname:            {key.name}\n"
                  f"owner:           {key.owner or ''}\nstate:           {_state(key)}\n"
                  f"allowed models:  {', '.join(sorted(key.allowed_models)) or 'all'}\n"
                  f"budget USD:      {budget}\n"
                  f"expires:         {key.expires_at or 'never'}\n"
                  f"created:         {key.created_at}\n"
                  f"month-to-date:   {spend} USD")
    for name, value in sorted(key.metadata.items()):
        console.print(f"metadata {name} = {value}")
