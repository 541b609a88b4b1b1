"""``ledger catalog import``, ``ledger models search|show`` and ``ledger cost``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ledger.catalog import (
    SNAPSHOT_LITELLM_VERSION,
    ModelRecord,
    load_snapshot,
    resolve_model_name,
)
from ledger.db import DatabaseConnectError, connect
from ledger.fields import DATA_RESIDENCIES, SERVICE_TIERS, DataResidency, ServiceTier
from ledger.pricing import CostBreakdown, Usage, price
from ops.catalog_import import CatalogImporter, ImportSummary, read_source
from ops.cli import context
from ops.cli.errors import connect_failure
from ops.exceptions import CatalogLookupError, CostOptionError
from readmodels.catalog_lookup import ModelMatch, ResolvedModel, aliases_of, catalog_is_empty
from readmodels.catalog_lookup import resolve as resolve_in_db
from readmodels.catalog_lookup import search as search_in_db

console = Console()
err_console = Console(stderr=True)
catalog_app = typer.Typer(help="The model catalog: BerriAI's price map as events.",
                          no_args_is_help=True)
models_app = typer.Typer(help="Look models up in the projected catalog.", no_args_is_help=True)

EXIT_UNPRICED = 2


def register(root: typer.Typer) -> None:
    root.add_typer(catalog_app, name="catalog")
    root.add_typer(models_app, name="models")
    root.command("cost")(cost)


def _fmt(value: object) -> str:
    """Decimals in plain notation without trailing zeros: ``0.0000025``, never ``2.5E-6``."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _parse_when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 timestamp: {text!r}") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -- ledger catalog import --------------------------------------------------------------------


@catalog_app.command("import")
def import_catalog(
    file: Path | None = typer.Option(
        None, "--file", exists=True, dir_okay=False, help="a price map on disk"),
    url: str | None = typer.Option(None, "--url", help="a price map over HTTP(S)"),
    wait: bool = typer.Option(
        False, "--wait", help="wait until the catalog projection holds the models"),
    valid_from: str | None = typer.Option(
        None, "--valid-from", help="when new prices apply (ISO 8601; naive means UTC); "
        "default now"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the summary, emit nothing"),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="seconds for --url/--wait"),
) -> None:
    """Import BerriAI's price map (default: the packaged snapshot); emits only what changed."""
    if file is not None and url is not None:
        raise typer.BadParameter("give at most one of --file and --url")
    when = _parse_when(valid_from)
    label, price_map = read_source(file, url, timeout_s=timeout)
    importer = CatalogImporter(context.settings(), dsn=context.database_url(),
                               bootstrap_servers=context.kafka_bootstrap_servers(),
                               console=err_console)

    async def run() -> ImportSummary:
        summary = await importer.run(price_map, source=label, valid_from=when, dry_run=dry_run)
        if wait and summary.emitted:
            await importer.wait_until_projected(summary, timeout_s=timeout)
        return summary

    summary = asyncio.run(run())
    console.print(f"catalog import from {summary.source}")
    table = Table()
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    for what, count in summary.counts().items():
        table.add_row(what, str(count))
    console.print(table)
    for name, why in summary.plan.rejected.items():
        console.print(f"rejected entry {name!r}: {why}")
    verb = "would emit" if dry_run else "emitted"
    console.print(f"{verb} {len(summary.plan.events)} events in {summary.seconds:.2f}s"
                  + ("; projection caught up" if wait and summary.emitted else ""))


# -- ledger models search | show --------------------------------------------------------------


async def _connect() -> asyncpg.Connection:
    return await connect(context.database_url(), context.settings())


@models_app.command("search")
def search(
    query: str = typer.Argument(..., help="part of a model name; typos are fine"),
    limit: int = typer.Option(10, "--limit", min=1, max=1000),
) -> None:
    """Models whose name looks like QUERY (pg_trgm similarity), best first."""
    async def run() -> list[ModelMatch]:
        conn = await _connect()
        try:
            return await search_in_db(conn, query, limit)
        finally:
            await conn.close()

    matches = asyncio.run(run())
    if not matches:
        console.print(f"no model looks like {query!r}")
        raise typer.Exit(1)
    for m in matches:
        retired = " retired" if m.retired_at else ""
        typer.echo(f"{m.score:.3f}  {m.name}  ({m.provider or '-'}, {m.mode or '-'}){retired}")


@models_app.command("show")
def show(name: str = typer.Argument(..., help="a model name, alias or provider/name")) -> None:
    """A model's typed fields and features (the full entry is in models.raw)."""
    async def run() -> tuple[ResolvedModel | None, list[str]]:
        conn = await _connect()
        try:
            found = await resolve_in_db(conn, name)
            return found, (await aliases_of(conn, found.name) if found else [])
        finally:
            await conn.close()

    found, aliases = asyncio.run(run())
    if found is None:
        raise CatalogLookupError(f"no model named {name!r}; try `ledger models search {name}`")
    typer.echo(f"name: {found.name}")
    if found.asked != found.name:
        typer.echo(f"asked: {found.asked} (resolved via {found.how})")
    typer.echo(f"provider: {found.provider or '-'}")
    typer.echo(f"mode: {found.mode or '-'}")
    typer.echo(f"valid_from: {_fmt(found.valid_from)}")
    if found.retired_at is not None:
        typer.echo(f"retired_at: {_fmt(found.retired_at)}")
    if aliases:
        typer.echo(f"aliases: {', '.join(aliases)}")
    for column, value in found.typed.items():
        typer.echo(f"{column}: {_fmt(value)}")
    typer.echo(f"features: {', '.join(found.features) or '-'}")


# -- ledger cost ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Priced:
    record: ModelRecord
    how: str  # how the name resolved
    origin: str  # where the prices came from, said in the output


async def _from_database(name: str) -> _Priced | str:
    """The model from PostgreSQL, or (a str) why the packaged snapshot is used instead."""
    try:
        conn = await connect(context.database_url(), context.settings())
    except DatabaseConnectError as exc:
        if not exc.retriable:  # the server may be fine; a setting is wrong: say which
            return f"a database setting is wrong: {connect_failure(exc)}"
        return f"database not reachable ({exc})"
    try:
        try:
            if await catalog_is_empty(conn):
                return "the database catalog is empty; run `ledger catalog import`"
        except asyncpg.UndefinedTableError:
            return "the database has no catalog tables"
        found = await resolve_in_db(conn, name)
    finally:
        await conn.close()
    if found is None:
        raise CatalogLookupError(
            f"no model named {name!r} in the database catalog; "
            f"try `ledger models search {name}`")
    retired = f", retired {_fmt(found.retired_at)}" if found.retired_at else ""
    return _Priced(found.record(), found.how,
                   f"database catalog (valid from {_fmt(found.valid_from)}{retired})")


def _from_snapshot(name: str, why: str) -> _Priced:
    price_map = load_snapshot()
    canonical = resolve_model_name(name, price_map)
    if canonical is None:
        raise CatalogLookupError(f"no model named {name!r} in the packaged snapshot")
    how = "name" if canonical == name else "alias or provider prefix"
    return _Priced(ModelRecord.from_berriai(canonical, price_map[canonical]), how,
                   f"packaged snapshot (litellm {SNAPSHOT_LITELLM_VERSION}): {why}")


def _seconds_side(record: ModelRecord) -> str:
    """Which side ``--seconds`` bills: input for transcription, output for generated video."""
    if record.price("input_cost_per_second") is None and record.price(
            "output_cost_per_second") is not None:
        return "output_seconds"
    return "input_seconds"


def cost(
    model: str = typer.Argument(..., help="a model name, alias or provider/name"),
    prompt: int = typer.Option(0, "--prompt", min=0, help="prompt tokens (all of them)"),
    completion: int = typer.Option(0, "--completion", min=0, help="completion tokens"),
    cache_read: int = typer.Option(0, "--cache-read", min=0, help="part of --prompt"),
    cache_creation: int = typer.Option(0, "--cache-creation", min=0, help="part of --prompt"),
    reasoning: int = typer.Option(0, "--reasoning", min=0, help="part of --completion"),
    audio_in: int = typer.Option(0, "--audio-in", min=0, help="part of --prompt"),
    audio_out: int = typer.Option(0, "--audio-out", min=0, help="part of --completion"),
    images: int = typer.Option(0, "--images", min=0, help="input images"),
    output_images: int = typer.Option(
        0, "--output-images", min=0, help="images the model generated"),
    seconds: str = typer.Option("0", "--seconds", help="audio/video seconds (a decimal)"),
    characters: int = typer.Option(0, "--characters", min=0, help="input characters"),
    at: str | None = typer.Option(
        None, "--at", help="when the request was made (ISO 8601; naive means UTC); "
        "decides off-peak prices; default now"),
    service_tier: str | None = typer.Option(
        None, "--service-tier", help=f"{'|'.join(SERVICE_TIERS)}; default standard"),
    data_residency: str | None = typer.Option(
        None, "--data-residency", help=f"{'|'.join(DATA_RESIDENCIES)} (OpenAI)"),
    vertex_location: str | None = typer.Option(
        None, "--vertex-location", help="the Vertex AI location, e.g. us-east5 or global"),
    inference_geo: str | None = typer.Option(
        None, "--inference-geo", help="Anthropic's inference geo, e.g. us or global"),
) -> None:
    """Exact cost of one request: one line per component and a total in USD.

    Prices come from the database catalog when it is reachable, else from the snapshot.
    The output says which, and which time, tier and regional rules applied. Exit code 2
    when a unit used has no price.
    """
    try:
        duration = Decimal(seconds)
    except InvalidOperation as exc:
        raise typer.BadParameter(f"--seconds must be a decimal number, got {seconds!r}") from exc
    conditions = _conditions(at, service_tier, data_residency, vertex_location, inference_geo)
    found = asyncio.run(_from_database(model))
    priced = found if isinstance(found, _Priced) else _from_snapshot(model, found)
    counts: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_creation,
        "reasoning_tokens": reasoning, "audio_input_tokens": audio_in,
        "audio_output_tokens": audio_out, "images": images, "output_images": output_images,
        "characters": characters,
        _seconds_side(priced.record): duration,
    }
    try:
        usage = Usage(**counts)
    except ValidationError as exc:
        message = "; ".join(str(e["msg"]).removeprefix("Value error, ")
                            for e in exc.errors(include_url=False))
        raise typer.BadParameter(message) from exc
    breakdown = price(priced.record, usage, **conditions)
    _print_breakdown(model, priced, breakdown, show_time=at is not None)


def _conditions(at: str | None, service_tier: str | None, data_residency: str | None,
                vertex_location: str | None, inference_geo: str | None) -> dict[str, Any]:
    """``price``'s keyword arguments from the options; a bad value is one line (exit 1)."""
    if service_tier is not None and service_tier not in SERVICE_TIERS:
        raise CostOptionError(f"--service-tier must be one of {', '.join(SERVICE_TIERS)}, "
                              f"got {service_tier!r}")
    if data_residency is not None and data_residency not in DATA_RESIDENCIES:
        raise CostOptionError(f"--data-residency must be one of {', '.join(DATA_RESIDENCIES)}"
                              f", got {data_residency!r}")
    for name, value in (("--vertex-location", vertex_location),
                        ("--inference-geo", inference_geo)):
        if value is not None and not value.strip():
            raise CostOptionError(f"{name} must not be empty")
    when = datetime.now(UTC)
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError as exc:
            raise CostOptionError(f"--at must be an ISO 8601 timestamp, got {at!r}") from exc
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return {"at": when, "service_tier": cast(ServiceTier | None, service_tier),
            "data_residency": cast(DataResidency | None, data_residency),
            "vertex_location": vertex_location, "inference_geo": inference_geo}


def _print_breakdown(
    asked: str, priced: _Priced, breakdown: CostBreakdown, *, show_time: bool
) -> None:
    resolved = "" if asked == breakdown.model else f" (asked {asked}, via {priced.how})"
    typer.echo(f"model: {breakdown.model}{resolved}")
    typer.echo(f"prices: {priced.origin}")
    if breakdown.at is not None and (show_time or priced.record.has_off_peak_pricing):
        rates = "off-peak" if breakdown.off_peak else "standard"
        typer.echo(f"at: {breakdown.at.isoformat()} ({rates} hours)")
    if breakdown.service_tier:
        typer.echo(f"service tier: {breakdown.service_tier}")
    if breakdown.tier:
        typer.echo(f"tier: {breakdown.tier}")
    width = max((len(line.component) for line in breakdown.lines), default=0)
    for line in breakdown.lines:
        label = line.component.ljust(width)
        if line.unit_price is None:
            typer.echo(f"{label}  {_fmt(line.quantity)} x unpriced (no price in the catalog)")
        else:
            typer.echo(f"{label}  {_fmt(line.quantity)} x {_fmt(line.unit_price)} = "
                       f"{_fmt(line.amount)}  [{line.price_key}]")
    for note in breakdown.notes:
        typer.echo(f"note: {note}")
    if breakdown.unpriced:
        typer.echo(f"total {_fmt(breakdown.total)} USD "
                   f"(incomplete: unpriced {', '.join(breakdown.unpriced)})")
        raise typer.Exit(EXIT_UNPRICED)
    typer.echo(f"total {_fmt(breakdown.total)} USD")
