"""CatalogProjection: providers, models, model_aliases and the price history.

The typed model columns are derived from the raw BerriAI entry by ``ModelRecord``, so the
event carries one source of truth and a new typed column is a migration plus a rebuild.

A batch that changes a name or a price history re-prices the usage those changes reach, in
the same transaction (``projections.repricing``), so that usage projected before the catalog
knew its model ends up priced exactly as a rebuild would price it. A rebuild of the catalog
itself replays into scratch tables and re-prices nothing.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from ledger.catalog import ModelRecord
from ledger.events import (
    EventBase,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelRetired,
    ModelUpserted,
    ProviderRemoved,
    ProviderUpserted,
)
from ledger.invalidation import Invalidation, merge
from ledger.settings import Settings
from projections.base import ApplyResult, Envelope
from projections.repricing import PricingChanges, Repricer
from projections.sequential import HandlerError, SequentialProjection

MODEL_COLUMNS: tuple[str, ...] = (
    "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
    "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr",
    "input_cost_per_token_above_128k_tokens", "output_cost_per_token_above_128k_tokens",
    "input_cost_per_token_above_200k_tokens", "output_cost_per_token_above_200k_tokens",
    "input_cost_per_token_above_272k_tokens", "output_cost_per_token_above_272k_tokens",
    "output_cost_per_reasoning_token", "input_cost_per_audio_token",
    "output_cost_per_audio_token", "input_cost_per_image", "output_cost_per_image",
    "input_cost_per_second", "output_cost_per_second", "input_cost_per_character",
    "output_cost_per_character", "input_cost_per_token_batches", "output_cost_per_token_batches",
    "input_cost_per_token_priority", "output_cost_per_token_priority",
    "input_cost_per_token_flex", "output_cost_per_token_flex", "max_input_tokens",
    "max_output_tokens", "max_tokens", "supports_function_calling", "supports_vision",
    "supports_reasoning", "supports_prompt_caching", "supports_response_schema",
    "supports_audio_input", "supports_audio_output", "deprecation_date",
)
_ALL = ("name", "provider", "mode", *MODEL_COLUMNS, "features", "raw", "valid_from")
# Returns what pricing read of the model before: its provider and whether it was an alias_of
# entry (alias_of NULL: the model is new). The CTE sees the table as it was before.
_UPSERT_MODEL = (
    "WITH before AS (SELECT provider, raw ? 'alias_of' AS alias_of FROM models "
    "WHERE name = $1) "
    f"INSERT INTO models ({', '.join(_ALL)}, retired_at, updated_at) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_ALL) + 1))}, NULL, now()) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _ALL[1:])
    + ", retired_at = NULL, updated_at = now() "
    "RETURNING (SELECT provider FROM before) AS provider, "
    "(SELECT alias_of FROM before) AS alias_of"
)


def _models_changed(*names: str) -> Invalidation:
    return Invalidation(models=frozenset(names))


def model_row(event: ModelUpserted) -> list[Any]:
    record = ModelRecord.from_berriai(event.name, event.raw)
    return [
        event.name, event.provider or record.provider, record.mode,
        *(getattr(record, column, None) for column in MODEL_COLUMNS),
        sorted(record.features), json.dumps(event.raw, default=str), event.valid_from,
    ]


class CatalogProjection(SequentialProjection):
    name = "catalog"

    def __init__(self) -> None:
        self._repricer = Repricer()
        self._changes = PricingChanges()

    async def apply(self, conn: asyncpg.Connection, batch: list[Envelope]) -> ApplyResult:
        self._changes = PricingChanges()
        result = await super().apply(conn, batch)
        if self.rebuilding or not self._changes:
            return result
        repriced = await self._repricer.reprice(conn, self._changes)
        return ApplyResult(result.applied, merge([result.invalidation, repriced.invalidation]),
                           result.failures, repriced=repriced.events)

    def topic(self, settings: Settings) -> str:
        return settings.topic_catalog

    def tables(self) -> tuple[str, ...]:
        return ("providers", "models", "model_aliases", "model_price_history")

    async def apply_one(self, conn: asyncpg.Connection, event: EventBase) -> Invalidation:
        if isinstance(event, ModelUpserted):
            row = model_row(event)
            before = await conn.fetchrow(_UPSERT_MODEL, *row)
            assert before is not None
            added = await conn.fetchval(
                "INSERT INTO model_price_history (model, valid_from, raw) VALUES ($1, $2, $3) "
                "ON CONFLICT (model, valid_from) DO NOTHING RETURNING true",
                event.name, event.valid_from, json.dumps(event.raw, default=str))
            change = await self._with_aliases(conn, event.name)
            if before["alias_of"] is None or (before["provider"], before["alias_of"]) != (
                    row[1], "alias_of" in event.raw):
                self._changes.name(*change.models)  # a new name, or one that means another
            if added:
                self._changes.price(event.name, event.valid_from)
            return change
        if isinstance(event, ModelRetired):
            await conn.execute(
                "UPDATE models SET retired_at = coalesce(retired_at, $2), updated_at = now() "
                "WHERE name = $1", event.name, event.occurred_at)
            return await self._with_aliases(conn, event.name)
        if isinstance(event, ModelAliasSet):
            previous = await conn.fetchval(
                "SELECT model FROM model_aliases WHERE alias = $1", event.alias)
            await conn.execute(
                "INSERT INTO model_aliases (alias, model, updated_at) VALUES ($1, $2, now()) "
                "ON CONFLICT (alias) DO UPDATE SET model = EXCLUDED.model, updated_at = now()",
                event.alias, event.model)
            if previous != event.model:
                self._changes.name(event.alias)
            return _models_changed(event.alias, event.model, *([previous] if previous else []))
        if isinstance(event, ModelAliasRemoved):
            previous = await conn.fetchval(
                "DELETE FROM model_aliases WHERE alias = $1 RETURNING model", event.alias)
            if previous is not None:
                self._changes.name(event.alias)
            return _models_changed(event.alias, *([previous] if previous else []))
        if isinstance(event, ProviderUpserted):
            await conn.execute(
                "INSERT INTO providers (name, base_url, api_version, auth_scheme, features, "
                "config, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now()) "
                "ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url, "
                "api_version = EXCLUDED.api_version, auth_scheme = EXCLUDED.auth_scheme, "
                "features = EXCLUDED.features, config = EXCLUDED.config, updated_at = now()",
                event.name, event.base_url, event.api_version, event.auth_scheme,
                list(event.features), json.dumps(event.config, default=str))
            return _models_changed()
        if isinstance(event, ProviderRemoved):
            await conn.execute("DELETE FROM providers WHERE name = $1", event.name)
            return _models_changed()
        raise HandlerError(f"{event.type} does not belong on the catalog topic")

    async def _with_aliases(self, conn: asyncpg.Connection, name: str) -> Invalidation:
        aliases = await conn.fetch("SELECT alias FROM model_aliases WHERE model = $1", name)
        return _models_changed(name, *(row["alias"] for row in aliases))
