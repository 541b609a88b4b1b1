"""The catalog end to end: CatalogImporter -> Kafka -> CatalogProjection -> PostgreSQL.

Real broker and database, through the real projector. The full snapshot is imported once
(one test walks import, re-import, a price change and a removal) to keep the suite fast.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from ledger.catalog import load_snapshot
from ledger.events import ModelAliasSet, ModelRetired, ModelUpserted
from ledger.settings import Settings
from ops.catalog_import import CatalogImporter, ImportSummary, read_source, wire_raw
from projections import make_projection
from projections.rebuild import Rebuilder
from readmodels.catalog_lookup import resolve
from tests.projections.helpers import emit, fetchval, running_worker, usage_event, wait_for_rows

JAN, MAR, JUN, SEP = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 3, 6, 9))


async def _import(
    settings: Settings, price_map: Mapping[str, Mapping[str, Any]], *,
    valid_from: datetime | None = None, wait: bool = True,
) -> ImportSummary:
    importer = CatalogImporter(settings, show_progress=False)
    summary = await importer.run(price_map, valid_from=valid_from)
    if wait and summary.emitted:
        await importer.wait_until_projected(summary, timeout_s=60)
    return summary


async def _stored_raw(dsn: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, raw::text AS raw FROM models")
    finally:
        await conn.close()
    return {r["name"]: json.loads(r["raw"], parse_float=Decimal) for r in rows}


def _write(path: Path, price_map: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(price_map, default=str))  # Decimals as strings: still prices
    return path


async def test_full_snapshot_import_then_noop_change_and_retire(
    settings: Settings, tmp_path: Path
) -> None:
    snapshot = load_snapshot()
    assert settings.database_url
    dsn = settings.database_url
    async with running_worker(settings, ("catalog",)):
        started = time.perf_counter()
        first = await _import(settings, snapshot)
        elapsed = time.perf_counter() - started
        print(f"\nfull snapshot: {first.emitted} events planned+emitted in {first.seconds:.1f}s, "
              f"projected after {elapsed:.1f}s")
        assert len(first.plan.added) == len(snapshot) and not first.plan.rejected

        # Every entry is a row, sample_spec is not, and each raw entry is kept whole.
        stored = await _stored_raw(dsn)
        assert set(stored) == set(snapshot)
        assert "sample_spec" not in stored
        # Exactly what the event carried, for every entry (see wire_raw for the encoding).
        assert all(stored[name] == wire_raw(entry) for name, entry in snapshot.items())
        odd = [n for n, e in snapshot.items()
               if any(isinstance(v, dict | list) for v in e.values())]
        assert len(odd) > 100  # nested objects and lists survive as JSON objects and arrays
        entry = snapshot["azure/gpt-realtime-2.1-2026-07-07"]
        kept = stored["azure/gpt-realtime-2.1-2026-07-07"]
        assert kept["provider_specific_entry"] == entry["provider_specific_entry"] == {
            "realtime_ga_only": 1}
        assert kept["supported_modalities"] == ["text", "image", "audio"]
        assert Decimal(kept["input_cost_per_token"]) == entry["input_cost_per_token"]
        assert await fetchval(  # typed columns are filled for odd shapes too
            dsn, "SELECT input_cost_per_token FROM models WHERE name = $1",
            "azure/gpt-realtime-2.1-2026-07-07") == entry["input_cost_per_token"]
        providers = await fetchval(dsn, "SELECT count(*) FROM providers")
        assert providers == len(first.plan.providers_added) > 100

        # Re-importing the same map emits nothing.
        again = await _import(settings, snapshot)
        assert again.emitted == 0 and len(again.plan.unchanged) == len(snapshot)

        # A changed price emits exactly one ModelUpserted and the row follows.
        changed = dict(snapshot)
        changed["gpt-4o"] = {**snapshot["gpt-4o"], "input_cost_per_token": Decimal("0.000003")}
        _, from_file = read_source(file=_write(tmp_path / "changed.json", changed))
        summary = await _import(settings, from_file)
        assert summary.emitted == 1 and summary.plan.changed == ("gpt-4o",)
        assert [type(e) for e in summary.plan.events] == [ModelUpserted]
        assert await fetchval(
            dsn, "SELECT input_cost_per_token FROM models WHERE name = 'gpt-4o'"
        ) == Decimal("0.000003")
        assert await fetchval(
            dsn, "SELECT count(*) FROM model_price_history WHERE model = 'gpt-4o'") == 2

        # A removed entry emits ModelRetired and the row is kept, with retired_at.
        removed = {k: v for k, v in from_file.items() if k != "gpt-4o-mini"}
        summary = await _import(settings, removed)
        assert summary.emitted == 1 and summary.plan.retired == ("gpt-4o-mini",)
        assert [type(e) for e in summary.plan.events] == [ModelRetired]
    assert await fetchval(
        dsn, "SELECT retired_at IS NOT NULL FROM models WHERE name = 'gpt-4o-mini'") is True
    assert await fetchval(
        dsn, "SELECT count(*) FROM models WHERE retired_at IS NULL") == len(snapshot) - 1


async def test_aliases_resolve_and_only_owned_aliases_are_removed(settings: Settings) -> None:
    snapshot = load_snapshot()
    names = ["gpt-4o", "gpt-4o-mini", "azure_ai/gpt-6-astra", "azure_ai/gpt-astra-latest"]
    small = {n: snapshot[n] for n in names}
    assert snapshot["azure_ai/gpt-astra-latest"] == {"alias_of": "azure_ai/gpt-6-astra"}
    assert settings.database_url
    dsn = settings.database_url
    async with running_worker(settings, ("catalog",)):
        first = await _import(settings, small)
        # alias_of entries become alias rows; provider prefixes stay a lookup rule.
        assert first.plan.aliases_set == {"azure_ai/gpt-astra-latest": "azure_ai/gpt-6-astra"}
        assert sum(isinstance(e, ModelAliasSet) for e in first.plan.events) == 1
        await wait_for_rows(dsn, "SELECT count(*) FROM model_aliases", 1)

        conn = await asyncpg.connect(dsn)
        try:
            # An operator's own alias, which no import may remove.
            await conn.execute(
                "INSERT INTO model_aliases (alias, model) VALUES ('my-4o', 'gpt-4o')")
            cases = {
                "gpt-4o": ("gpt-4o", "name"),
                "openai/gpt-4o": ("gpt-4o", "provider prefix"),
                "azure_ai/gpt-astra-latest": ("azure_ai/gpt-6-astra", "alias"),
                "my-4o": ("gpt-4o", "alias"),
                "openai/my-4o": ("gpt-4o", "provider prefix and alias"),
            }
            for asked, (name, how) in cases.items():
                found = await resolve(conn, asked)
                assert found is not None, asked
                assert (found.name, found.how) == (name, how), asked
            assert await resolve(conn, "anthropic/gpt-4o") is None  # wrong provider
            assert await resolve(conn, "no-such-model") is None
        finally:
            await conn.close()

        # The alias_of entry disappears: its alias is removed, the hand-made one stays.
        without = {k: v for k, v in small.items() if k != "azure_ai/gpt-astra-latest"}
        summary = await _import(settings, without)
        assert summary.plan.aliases_removed == ("azure_ai/gpt-astra-latest",)
        assert summary.plan.retired == ("azure_ai/gpt-astra-latest",)
        await wait_for_rows(dsn, "SELECT count(*) FROM model_aliases", 1)
    assert await fetchval(dsn, "SELECT alias FROM model_aliases") == "my-4o"


async def test_usage_keeps_the_price_of_its_time_across_a_change_and_a_rebuild(
    settings: Settings,
) -> None:
    snapshot = load_snapshot()
    v1 = {"gpt-4o": snapshot["gpt-4o"]}
    assert v1["gpt-4o"]["input_cost_per_token"] == Decimal("0.0000025")
    assert v1["gpt-4o"]["output_cost_per_token"] == Decimal("0.00001")
    v2 = {"gpt-4o": {**v1["gpt-4o"], "input_cost_per_token": Decimal("0.000005")}}
    old = 1000 * Decimal("0.0000025") + 500 * Decimal("0.00001")  # 0.0075
    new = 1000 * Decimal("0.000005") + 500 * Decimal("0.00001")  # 0.0100
    key = uuid.uuid4()

    def usage(when: datetime) -> Any:
        return usage_event(key, when=when, cost=None, prompt=1000, completion=500)

    assert settings.database_url
    dsn = settings.database_url
    count_sql = "SELECT count(*) FROM usage_records"
    async with running_worker(settings, ("catalog", "usage")):
        await _import(settings, v1, valid_from=JAN)
        await emit(settings, [usage(MAR), usage(MAR)])
        await wait_for_rows(dsn, count_sql, 2)
        summary = await _import(settings, v2, valid_from=JUN)
        assert summary.plan.changed == ("gpt-4o",)
        await wait_for_rows(dsn, "SELECT count(*) FROM model_price_history", 2)
        # After the change: new usage, and a late event that happened before it.
        await emit(settings, [usage(SEP), usage(MAR.replace(day=15))])
        await wait_for_rows(dsn, count_sql, 4)

    expected = {MAR: old, MAR.replace(day=15): old, SEP: new}

    async def costs() -> list[tuple[datetime, Decimal, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT occurred_at, cost_usd, cost_source FROM usage_records ORDER BY 1")
        finally:
            await conn.close()
        return [(r["occurred_at"], r["cost_usd"], r["cost_source"]) for r in rows]

    before = await costs()
    assert [(c, s) for _, c, s in before] == [(expected[w], "catalog") for w, _, _ in before]
    assert sorted({w for w, _, _ in before}) == sorted(expected)

    # Rebuild the usage projection from the log (fresh tables, swapped in): same costs.
    assert settings.kafka_bootstrap_servers
    await Rebuilder(make_projection("usage"), settings, dsn=dsn,
                    bootstrap_servers=settings.kafka_bootstrap_servers).run()
    assert await costs() == before
