"""CatalogImporter: a BerriAI price map -> catalog events, emitting only what changed.

The importer is stateless: it diffs the price map against what the catalog projection holds
in PostgreSQL (``models.raw`` of the live models, ``model_aliases``, ``providers``) and
emits the difference. Re-importing the same map therefore emits nothing, and an import
that died half-way is finished by running it again.

Decisions:

* Only ``alias_of`` entries become ``model_aliases`` rows. A provider-prefixed name
  (``openai/gpt-4o``) stays a rule of name resolution (``ledger.catalog.naming``, the one
  rule every caller uses): it is derivable from ``models.provider``, so ~830 extra rows
  would only add bookkeeping that can fall out of step when a model changes provider.
* The importer only removes aliases it owns (names that were ``alias_of`` entries in the
  previous catalog), so an alias an operator set by hand survives every import.
* Providers are upserted once, when first seen; afterwards an operator owns their
  base URL, auth scheme and config, which an import must not overwrite.
* Raw entries are compared in their *wire* form (what the projection stored after the
  event went through JSON), by value: a Decimal travelling as the string ``"0.0000025"``
  equals the number ``2.5e-06``, so neither an encoding detail nor a respelled number
  (``2.50E-6``) reads as a price change, whichever way the event encodes Decimals.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ledger.catalog.berriai import (
    SNAPSHOT_LITELLM_VERSION,
    aliases_from_price_map,
    diff_catalog,
    load_price_map,
    load_snapshot,
    providers_from_price_map,
)
from ledger.db import connect
from ledger.events import (
    EventBase,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelRetired,
    ModelUpserted,
    ProviderUpserted,
    Topics,
    dump_event,
)
from ledger.exceptions import LedgerError
from ledger.fields import EARLIEST
from ledger.producer import Delivery, LedgerProducer
from ledger.settings import Settings
from ops.exceptions import CatalogImportError
from projections.storage import read_checkpoints
from readmodels.catalog_lookup import CatalogState, live_model_count, read_catalog_state

__all__ = [
    "CatalogImportError",
    "CatalogImporter",
    "CatalogState",
    "ImportPlan",
    "ImportSummary",
    "plan_import",
    "read_catalog_state",
    "read_source",
    "wire_raw",
]

IMPORT_SOURCE = "ledger-catalog-import"
CATALOG_PROJECTION = "catalog"


# -- reading the price map --------------------------------------------------------------------


def read_source(
    file: Path | None = None, url: str | None = None, timeout_s: float = 30.0
) -> tuple[str, dict[str, dict[str, Any]]]:
    """(a label for the summary, the price map) from a file, a URL or the packaged snapshot."""
    if file is not None and url is not None:
        raise CatalogImportError("give at most one of --file and --url")
    try:
        if url is not None:
            # The URL is an operator's own choice (e.g. LiteLLM's raw GitHub file).
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return url, load_price_map(response.read())
        if file is not None:
            return str(file), load_price_map(file)
    except (OSError, urllib.error.URLError) as exc:
        raise CatalogImportError(f"cannot read the price map: {exc}") from exc
    except ValueError as exc:
        raise CatalogImportError(str(exc)) from exc
    return f"packaged snapshot (litellm {SNAPSHOT_LITELLM_VERSION})", load_snapshot()


# -- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    entries: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    retired: tuple[str, ...]
    unchanged: tuple[str, ...]
    aliases_set: dict[str, str]
    aliases_removed: tuple[str, ...]
    providers_added: tuple[str, ...]
    rejected: dict[str, str]  # entry name -> why it cannot be an event (an empty name)
    events: list[EventBase] = field(repr=False)


def _wire_raw(event: ModelUpserted) -> dict[str, Any]:
    """``raw`` as the projection will store it: through the event's own JSON encoding."""
    raw: dict[str, Any] = json.loads(dump_event(event), parse_float=Decimal)["raw"]
    return raw


def wire_raw(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A price-map entry as ``models.raw`` will hold it after a ModelUpserted round trip."""
    event = ModelUpserted(event_id=uuid.UUID(int=0), occurred_at=EARLIEST, source=IMPORT_SOURCE,
                          name="wire", raw=dict(entry), valid_from=EARLIEST)
    return _wire_raw(event)


_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def _by_value(value: Any) -> Any:
    """Numeric strings as Decimals, recursively: what diff_catalog compares."""
    if isinstance(value, str):
        return Decimal(value) if _NUMBER.fullmatch(value) else value
    if isinstance(value, dict):
        return {k: _by_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_value(v) for v in value]
    return value


def _provider_of(entry: Mapping[str, Any]) -> str | None:
    provider = entry.get("litellm_provider")
    return provider if isinstance(provider, str) and provider else None


def plan_import(
    price_map: Mapping[str, Mapping[str, Any]],
    state: CatalogState,
    *,
    valid_from: datetime,
    occurred_at: datetime | None = None,
    source: str = IMPORT_SOURCE,
) -> ImportPlan:
    """The events that turn ``state`` into ``price_map``; pure, so it is cheap to test."""
    occurred = occurred_at or datetime.now(UTC)

    def envelope() -> dict[str, Any]:
        return {"event_id": uuid.uuid4(), "occurred_at": occurred, "source": source}

    upserts: dict[str, ModelUpserted] = {}
    rejected: dict[str, str] = {}
    for name, entry in price_map.items():
        try:
            upserts[name] = ModelUpserted(**envelope(), name=name, provider=_provider_of(entry),
                                          raw=dict(entry), valid_from=valid_from)
        except ValidationError as exc:
            rejected[name] = str(exc.errors(include_url=False)[0]["msg"])
    current = {name: _by_value(_wire_raw(event)) for name, event in upserts.items()}
    diff = diff_catalog({name: _by_value(raw) for name, raw in state.models.items()}, current)

    desired = {alias: model for alias, model in aliases_from_price_map(price_map).items()
               if alias not in rejected}
    aliases_set = {a: m for a, m in sorted(desired.items()) if state.aliases.get(a) != m}
    owned_before = {name for name, raw in state.models.items() if "alias_of" in raw}
    aliases_removed = tuple(sorted(
        a for a in state.aliases if a not in desired and a in owned_before))

    providers = providers_from_price_map(price_map)
    new_providers = sorted(set(providers) - state.providers)

    events: list[EventBase] = []
    for name in new_providers:
        info = providers[name]
        events.append(ProviderUpserted(
            **envelope(), name=name, features=sorted(info.features),
            config={"origin": "berriai price map", "modes": sorted(info.modes),
                    "supported_endpoints": sorted(info.supported_endpoints)}))
    events.extend(upserts[name] for name in (*diff.added, *diff.changed))
    events.extend(ModelAliasSet(**envelope(), alias=a, model=m) for a, m in aliases_set.items())
    events.extend(ModelAliasRemoved(**envelope(), alias=a) for a in aliases_removed)
    events.extend(ModelRetired(**envelope(), name=name) for name in diff.retired)
    return ImportPlan(
        entries=len(price_map), added=diff.added, changed=diff.changed, retired=diff.retired,
        unchanged=diff.unchanged, aliases_set=aliases_set, aliases_removed=aliases_removed,
        providers_added=tuple(new_providers), rejected=rejected, events=events,
    )


# -- running an import ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    source: str
    plan: ImportPlan
    emitted: int
    seconds: float
    # Highest offset written per (topic, partition): what --wait waits for.
    end_offsets: dict[tuple[str, int], int]

    def counts(self) -> dict[str, int]:
        p = self.plan
        return {
            "added": len(p.added), "changed": len(p.changed), "retired": len(p.retired),
            "unchanged": len(p.unchanged), "aliases set": len(p.aliases_set),
            "aliases removed": len(p.aliases_removed), "providers added": len(p.providers_added),
            "rejected": len(p.rejected), "events emitted": self.emitted,
        }


class CatalogImporter:
    """Diff a price map against the projected catalog and emit the difference to Kafka."""

    def __init__(
        self, settings: Settings, *, dsn: str | None = None,
        bootstrap_servers: str | None = None, console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        self.settings = settings
        self.dsn = dsn or settings.database_url
        self.bootstrap_servers = bootstrap_servers or settings.kafka_bootstrap_servers
        if not self.dsn or not self.bootstrap_servers:
            raise CatalogImportError("the importer needs a database URL and Kafka servers")
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress

    async def plan(
        self, price_map: Mapping[str, Mapping[str, Any]], *, valid_from: datetime | None = None
    ) -> ImportPlan:
        conn = await connect(str(self.dsn), self.settings)
        try:
            state = await read_catalog_state(conn)
        finally:
            await conn.close()
        return plan_import(price_map, state, valid_from=valid_from or datetime.now(UTC))

    async def run(
        self, price_map: Mapping[str, Mapping[str, Any]], *, source: str = "price map",
        valid_from: datetime | None = None, dry_run: bool = False,
    ) -> ImportSummary:
        started = time.perf_counter()
        plan = await self.plan(price_map, valid_from=valid_from)
        offsets: dict[tuple[str, int], int] = {}
        if plan.events and not dry_run:
            offsets = await self._emit(plan.events)
        emitted = 0 if dry_run else len(plan.events)
        return ImportSummary(source, plan, emitted, time.perf_counter() - started, offsets)

    async def _emit(self, events: list[EventBase]) -> dict[tuple[str, int], int]:
        """Emit in bulk: enqueue everything, then await the deliveries together.

        No spool: an import is rerun by hand, and a spooled backlog would make ``--wait``
        hang; a delivery failure is an error the operator sees right away.
        """
        producer = LedgerProducer(
            str(self.bootstrap_servers), topics=Topics.from_settings(self.settings),
            source=IMPORT_SOURCE, spool_dir=None, linger_ms=20, max_batch_size=1024 * 1024)
        progress = Progress(
            TextColumn("emitting catalog events"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console, disable=not self.show_progress)
        try:
            async with producer:
                with progress:
                    task = progress.add_task("emit", total=len(events))
                    futures: list[asyncio.Future[Delivery]] = []
                    for event in events:
                        future = await producer.emit(event)
                        future.add_done_callback(lambda _f: progress.advance(task))
                        futures.append(future)
                    deliveries = await asyncio.gather(*futures)
        except LedgerError as exc:
            raise CatalogImportError(f"catalog events not delivered: {exc}") from exc
        offsets: dict[tuple[str, int], int] = {}
        for d in deliveries:
            if d.partition is not None and d.offset is not None:
                key = (d.topic, d.partition)
                offsets[key] = max(offsets.get(key, -1), d.offset)
        return offsets

    async def wait_until_projected(
        self, summary: ImportSummary, timeout_s: float = 120.0, poll_s: float = 0.25
    ) -> None:
        """Wait until the catalog projection applied every emitted event.

        Done when the projection's checkpoints passed the offsets just written and the
        ``models`` table holds exactly the map's entries as live models.
        """
        expected = summary.plan.entries - len(summary.plan.rejected)
        deadline = time.monotonic() + timeout_s
        conn = await connect(str(self.dsn), self.settings)
        try:
            while True:
                live = await live_model_count(conn)
                if live == expected and await self._checkpoints_passed(conn, summary):
                    return
                if time.monotonic() > deadline:
                    raise CatalogImportError(
                        f"timed out after {timeout_s:.0f}s: {live} of {expected} models live; "
                        "is `ledger project` running? (see `ledger status`, `ledger dlq list`)")
                await asyncio.sleep(poll_s)
        finally:
            await conn.close()

    @staticmethod
    async def _checkpoints_passed(conn: asyncpg.Connection, summary: ImportSummary) -> bool:
        held = {(c.topic, c.partition): c.next_offset
                for c in await read_checkpoints(conn, projection=CATALOG_PROJECTION)}
        return all(held.get(where, -1) > offset
                   for where, offset in summary.end_offsets.items())
