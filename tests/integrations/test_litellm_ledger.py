"""The callback against the real broker, projector and PostgreSQL: calls made through
LiteLLM become usage_records priced like LiteLLM prices them; spools are one per process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import litellm

from integrations.litellm import LedgerCallback
from integrations.litellm.slots import drain_orphans, slot_dir, start_in_free_slot
from ledger.catalog.berriai import load_price_map
from ledger.codec import dump_event
from ledger.producer import EventBuilder
from ledger.producer.spool import Spool, SpoolRecord
from ledger.routing import Topics, event_headers, partition_key
from ledger.settings import Settings
from ops.catalog_import import CatalogImporter
from tests.integrations.litellm_calls import (
    CALLS,
    MODELS,
    Capture,
    image_generation,
    registered,
    settle,
)
from tests.ledger.producer_helpers import consume
from tests.projections.helpers import running_worker, wait_for_rows

LITELLM_PRICE_MAP = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
# Ours is exact (Decimal from the price map's text); LiteLLM's is a binary float.
FLOAT_TOLERANCE = Decimal("1e-9")


async def _import_litellm_prices(settings: Settings) -> None:
    """The catalog an operator would import: LiteLLM's own bundled price map (its entries for
    the models called here), valid from before the calls."""
    price_map = load_price_map(LITELLM_PRICE_MAP)
    importer = CatalogImporter(settings, show_progress=False)
    summary = await importer.run({name: price_map[name] for name in MODELS},
                                 valid_from=datetime.now(UTC) - timedelta(minutes=1))
    await importer.wait_until_projected(summary, timeout_s=60)


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT * FROM usage_records ORDER BY occurred_at")
    finally:
        await conn.close()


async def test_n_calls_make_n_records_priced_as_litellm_prices_them(settings: Settings) -> None:
    assert settings.database_url
    capture = Capture()
    callback = LedgerCallback(settings)
    async with running_worker(settings, ("usage", "catalog")):
        await _import_litellm_prices(settings)
        with registered(capture, callback):
            for call in CALLS.values():
                await call()
            await settle(capture, len(CALLS))
            # LiteLLM logging the same call again: the same event, counted once.
            kwargs, response = capture.calls[0]
            await callback.async_log_success_event(kwargs, response, None, None)
            await callback.async_log_success_event(kwargs, response, None, None)
            # One more call after the copies: all go to the one partition of the (anonymous)
            # key, so once it is projected the copies have been too.
            await CALLS["chat"]()
            await settle(capture, len(CALLS) + 1)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records",
                            len(CALLS) + 1)
        await callback.close()
    rows = await _rows(settings.database_url)
    assert len(rows) == len(CALLS) + 1 and callback.emitted == len(CALLS) + 3
    reported = {kw["standard_logging_object"]["litellm_call_id"]: kw for kw, _ in capture.calls}
    for row in rows:
        slo = reported[row["request_id"]]["standard_logging_object"]
        assert row["status"] == ("success" if slo["status"] == "success" else "error")
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            slo["prompt_tokens"], slo["completion_tokens"])
        assert row["cost_source"] == "catalog", (row["model"], row["cost_source"])
        theirs = Decimal(repr(slo["response_cost"]))
        assert abs(row["cost_usd"] - theirs) <= FLOAT_TOLERANCE, (row["model"], row["cost_usd"],
                                                                  theirs)
    by_model = {(row["model"], row["status"], row["service_tier"]): row for row in rows}
    claude = by_model[("claude-haiku-4-5-20251001", "success", None)]
    assert (claude["cache_read_input_tokens"], claude["cache_creation_input_tokens"]) == (500, 2000)
    assert by_model[("o3-mini", "success", None)]["reasoning_tokens"] == 100
    audio = by_model[("gpt-4o-audio-preview-2024-12-17", "success", None)]
    assert (audio["audio_input_tokens"], audio["audio_output_tokens"]) == (600, 800)
    assert by_model[("gpt-4o", "success", "priority")]["cost_usd"] > by_model[
        ("gpt-4o", "success", None)]["cost_usd"]
    assert by_model[("gpt-4o", "error", None)]["error_code"] == "500"
    assert all(row["cost_usd"] > 0 for row in rows if row["status"] == "success")


async def test_a_generated_image_is_priced_per_output_image_as_litellm_prices_it(
    settings: Settings,
) -> None:
    """gemini-3-pro-image-preview: 0.134 per generated image, 0.0011 per input image; the
    image used to arrive as an input image, 122 times too cheap."""
    assert settings.database_url
    capture = Capture()
    callback = LedgerCallback(settings)
    async with running_worker(settings, ("usage", "catalog")):
        price_map = load_price_map(LITELLM_PRICE_MAP)
        importer = CatalogImporter(settings, show_progress=False)
        name = "gemini-3-pro-image-preview"
        summary = await importer.run({name: price_map[name]},
                                     valid_from=datetime.now(UTC) - timedelta(minutes=1))
        await importer.wait_until_projected(summary, timeout_s=60)
        with registered(capture, callback):
            await image_generation("gemini/gemini-3-pro-image-preview")
            await settle(capture, 1)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 1)
        await callback.close()
    (row,) = await _rows(settings.database_url)
    slo = capture.calls[0][0]["standard_logging_object"]
    assert (row["model"], row["images"], row["output_images"]) == (name, 0, 1)
    assert (row["cost_usd"], row["cost_source"]) == (Decimal("0.134"), "catalog")
    assert abs(row["cost_usd"] - Decimal(repr(slo["response_cost"]))) <= FLOAT_TOLERANCE


def _usage_record(settings: Settings) -> SpoolRecord:
    event = EventBuilder("litellm").usage(api_key_id="00000000-0000-4000-8000-000000000001",
                                          request_id="left-by-a-dead-worker", model="gpt-4o",
                                          prompt_tokens=1, completion_tokens=1)
    topics = Topics(settings.topic_usage, settings.topic_keys, settings.topic_catalog)
    return SpoolRecord(topics.usage, partition_key(event), dump_event(event),
                       event_headers(event))


async def test_each_process_takes_its_own_spool_slot(settings: Settings) -> None:
    base = settings.resolved_spool_dir
    first = await start_in_free_slot(settings, source="litellm")
    second = await start_in_free_slot(settings, source="litellm")
    try:
        assert (first.spool_dir, second.spool_dir) == (slot_dir(base, 0), slot_dir(base, 1))
        await first.close()  # a worker stops: its slot is the next one taken
        third = await start_in_free_slot(settings, source="litellm")
        assert third.spool_dir == slot_dir(base, 0)
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_a_dead_workers_spool_is_resent_by_the_next_start(settings: Settings) -> None:
    assert settings.kafka_bootstrap_servers
    base = settings.resolved_spool_dir
    orphan = Spool(slot_dir(base, 3))  # what a worker that died with the broker away left
    orphan.append([_usage_record(settings)])
    orphan.close()
    callback = LedgerCallback(settings)
    producer = await callback._start()
    assert producer.spool_dir == slot_dir(base, 0)
    assert callback.orphan_drain is not None
    assert await callback.orphan_drain == [slot_dir(base, 3)]
    messages = await consume(settings.kafka_bootstrap_servers, [settings.topic_usage], 1)
    assert len(messages) == 1 and b"left-by-a-dead-worker" in messages[0].value
    assert (slot_dir(base, 3) / "spool.log").stat().st_size == 0
    await callback.close()
    # A slot whose owner is alive is left to it.
    live = Spool(slot_dir(base, 4))
    live.append([_usage_record(settings)])
    try:
        assert await drain_orphans(settings, source="litellm", base=base, own=None) == []
    finally:
        live.close()
