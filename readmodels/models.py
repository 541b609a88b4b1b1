"""The model catalog: cached name resolution, fuzzy search, providers.

Names resolve by the one rule of ``ledger.catalog.naming`` (exact name, alias,
``provider/name``, ``provider/alias``, then the same ignoring ASCII case), the rule the pricer
and the CLI use too. One query fetches every row the name can reach, so a miss is one round
trip; search is naming's one ranking.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import asyncpg

from ledger.catalog import naming
from ledger.catalog.naming import fold
from readmodels.cache import MISSING, Cache
from readmodels.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from readmodels.readmodels import Database

MAX_RESULTS = 1000

_MODEL_COLUMNS = """
    m.name, m.provider, m.mode, m.input_cost_per_token, m.output_cost_per_token,
    m.cache_read_input_token_cost, m.cache_creation_input_token_cost,
    m.cache_creation_input_token_cost_above_1hr,
    m.input_cost_per_token_above_128k_tokens, m.output_cost_per_token_above_128k_tokens,
    m.input_cost_per_token_above_200k_tokens, m.output_cost_per_token_above_200k_tokens,
    m.input_cost_per_token_above_272k_tokens, m.output_cost_per_token_above_272k_tokens,
    m.output_cost_per_reasoning_token, m.input_cost_per_audio_token,
    m.output_cost_per_audio_token, m.input_cost_per_image, m.output_cost_per_image,
    m.input_cost_per_second, m.output_cost_per_second, m.input_cost_per_character,
    m.output_cost_per_character, m.input_cost_per_token_batches,
    m.output_cost_per_token_batches, m.input_cost_per_token_priority,
    m.output_cost_per_token_priority, m.input_cost_per_token_flex,
    m.output_cost_per_token_flex, m.max_input_tokens, m.max_output_tokens, m.max_tokens,
    m.supports_function_calling, m.supports_vision, m.supports_reasoning,
    m.supports_prompt_caching, m.supports_response_schema, m.supports_audio_input,
    m.supports_audio_output, m.features, m.deprecation_date, m.valid_from, m.retired_at,
    m.updated_at
"""
# Every row a name can reach, with the model's columns: the rule then picks in Python.
_RESOLVE = naming.candidates_sql(_MODEL_COLUMNS, keys=naming.ONE_NAME)
_BY_PROVIDER = f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.provider = $1 ORDER BY m.name"
_PROVIDER_COLUMNS = "name, base_url, api_version, auth_scheme, features, config, updated_at"
_PROVIDER = f"SELECT {_PROVIDER_COLUMNS} FROM providers WHERE name = $1"
_PROVIDERS = f"SELECT {_PROVIDER_COLUMNS} FROM providers ORDER BY name"

_CAPABILITY_PREFIX = "supports_"


@dataclass(frozen=True, slots=True)
class Model:
    """One catalog model. ``prices`` holds every non-null price column, in USD (Decimal)."""

    name: str
    provider: str | None
    mode: str | None
    input_cost_per_token: Decimal | None
    output_cost_per_token: Decimal | None
    prices: Mapping[str, Decimal]
    max_input_tokens: int | None
    max_output_tokens: int | None
    max_tokens: int | None
    capabilities: frozenset[str]  # "vision", "function_calling", ... (supports_* that are true)
    features: tuple[str, ...]
    deprecation_date: date | None
    valid_from: datetime
    retired_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ModelMatch:
    model: Model
    score: float  # pg_trgm similarity in [0, 1]; a ranking, not money


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str | None
    api_version: str | None
    auth_scheme: str | None
    features: tuple[str, ...]
    config: Mapping[str, Any]
    updated_at: datetime


def _model_from_row(row: asyncpg.Record) -> Model:
    prices = {k: v for k, v in row.items() if "cost" in k and v is not None}
    capabilities = frozenset(
        k.removeprefix(_CAPABILITY_PREFIX) for k, v in row.items()
        if k.startswith(_CAPABILITY_PREFIX) and v
    )
    return Model(
        name=row["name"], provider=row["provider"], mode=row["mode"],
        input_cost_per_token=row["input_cost_per_token"],
        output_cost_per_token=row["output_cost_per_token"],
        prices=MappingProxyType(prices), max_input_tokens=row["max_input_tokens"],
        max_output_tokens=row["max_output_tokens"], max_tokens=row["max_tokens"],
        capabilities=capabilities, features=tuple(row["features"]),
        deprecation_date=row["deprecation_date"], valid_from=row["valid_from"],
        retired_at=row["retired_at"], updated_at=row["updated_at"],
    )


def _provider_from_row(row: asyncpg.Record) -> Provider:
    config = row["config"]
    return Provider(
        name=row["name"], base_url=row["base_url"], api_version=row["api_version"],
        auth_scheme=row["auth_scheme"], features=tuple(row["features"]),
        config=MappingProxyType(json.loads(config) if isinstance(config, str) else config),
        updated_at=row["updated_at"],
    )


class ModelReader:
    """Reads of ``models``, ``model_aliases`` and ``providers``: ``ReadModels.models``."""

    def __init__(self, db: Database, cache: Cache[str, Model]) -> None:
        self._db = db
        self._cache = cache
        # Names a notification may carry (model, alias, unprefixed part) -> the lookup names
        # cached under them, so "gpt-4o changed" also evicts "openai/gpt-4o" and alias "4o".
        self._dependents: dict[str, set[str]] = {}
        self.queries = 0

    async def get_by_name(self, name_or_alias: str) -> Model | None:
        """The model ``name_or_alias`` resolves to by ``ledger.catalog.naming``'s rule, or None.

        A name, an alias, ``provider/name`` or ``provider/alias``, then the same ignoring ASCII
        case; the naming module's docstring has the whole rule.
        """
        found = self._cache.lookup(name_or_alias)
        if found is not MISSING:
            return found
        return await self._cache.load(name_or_alias, self._load)

    async def _load(self, name: str) -> Model | None:
        self.queries += 1
        rows = await self._db.fetch("resolve model", _RESOLVE, *naming.one_name_keys(name))
        found = naming.resolve(name, naming.index_of(rows))
        model = None if found is None else _model_from_row(
            next(row for row in rows if row["name"] == found.model))
        # A change to any spelling of these names may change this answer (case is ignored).
        self._depend(name, name)
        prefixed = naming.split(name)
        if prefixed is not None:
            self._depend(prefixed[1], name)
        if model is not None:
            self._depend(model.name, name)
        return model

    def _depend(self, on: str, lookup: str) -> None:
        self._dependents.setdefault(fold(on), set()).add(lookup)
        if len(self._dependents) > 4 * self._cache.maxsize + 16:
            self._prune()

    def _prune(self) -> None:
        kept: dict[str, set[str]] = {}
        for on, lookups in self._dependents.items():
            live = {lookup for lookup in lookups if lookup in self._cache}
            if live:
                kept[on] = live
        self._dependents = kept

    async def search(self, query: str, limit: int = 10) -> tuple[ModelMatch, ...]:
        """Models whose name looks like ``query``, most similar first (pg_trgm)."""
        _check_limit(limit)
        rows: list[asyncpg.Record] = await self._db.run(
            "search models", lambda conn: naming.search_in_db(conn, query, limit, _MODEL_COLUMNS))
        return tuple(ModelMatch(_model_from_row(row), float(row["score"])) for row in rows)

    async def by_provider(self, provider: str) -> tuple[Model, ...]:
        """Every model of ``provider``, by name."""
        rows = await self._db.fetch("list models of provider", _BY_PROVIDER, provider)
        return tuple(_model_from_row(row) for row in rows)

    async def provider(self, name: str) -> Provider | None:
        row = await self._db.fetchrow("read provider", _PROVIDER, name)
        return None if row is None else _provider_from_row(row)

    async def providers(self) -> tuple[Provider, ...]:
        rows = await self._db.fetch("list providers", _PROVIDERS)
        return tuple(_provider_from_row(row) for row in rows)

    def invalidate(self, names: frozenset[str]) -> None:
        """Evict every lookup that depends on one of ``names`` (models or aliases)."""
        if not names:
            return
        for name in names:
            self._cache.evict(name)
            for lookup in self._dependents.pop(fold(name), ()):
                self._cache.evict(lookup)
        # A load in flight registers the canonical name only when it returns; catalog changes
        # are rare, so rather than guess, no running load may store its result.
        self._cache.abandon_flights()

    def clear(self) -> None:
        self._cache.clear()
        self._dependents.clear()


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_RESULTS:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_RESULTS}, got {limit}")
