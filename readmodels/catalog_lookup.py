"""The CLI's reads of the projected catalog: ``ledger models show|search``, ``ledger cost``
and the catalog importer's view of what is already projected (:func:`read_catalog_state`).

Names resolve by the one rule of ``ledger.catalog.naming`` (name, alias, ``provider/name``,
``provider/alias``, then the same ignoring case); search is naming's one ranking. This
module only adds what the CLI shows: the typed columns, the raw entry, which rule matched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ledger.catalog import naming
from ledger.catalog.naming import MIN_WORD_SIMILARITY
from ledger.catalog.record import ModelRecord

__all__ = [
    "MIN_WORD_SIMILARITY",
    "CatalogState",
    "ModelMatch",
    "ResolvedModel",
    "aliases_of",
    "catalog_is_empty",
    "live_model_count",
    "read_catalog_state",
    "resolve",
    "search",
]

_ROW = "m.*, m.raw::text AS raw_text"
_MATCH = "m.name, m.provider, m.mode, m.retired_at"

_ALIASES_OF = "SELECT alias FROM model_aliases WHERE model = $1 ORDER BY alias"

# Columns that are bookkeeping or shown separately, not typed catalog fields.
_NOT_TYPED = frozenset({
    "name", "provider", "mode", "raw", "raw_text", "features", "valid_from", "retired_at",
    "updated_at", "is_alias_entry", "aliases",  # the last two: naming's candidate columns
})


@dataclass(frozen=True)
class ResolvedModel:
    asked: str
    name: str
    how: str  # which rule matched: "name", "alias", "provider prefix", ...
    provider: str | None
    mode: str | None
    typed: dict[str, Any]  # the typed columns that are set, in table order
    features: tuple[str, ...]
    raw: dict[str, Any]
    valid_from: datetime
    retired_at: datetime | None

    def record(self) -> ModelRecord:
        """The pricing record, rebuilt from the raw entry exactly as the projector does."""
        return ModelRecord.from_berriai(self.name, self.raw)


@dataclass(frozen=True)
class ModelMatch:
    name: str
    provider: str | None
    mode: str | None
    retired_at: datetime | None
    score: float  # pg_trgm similarity in [0, 1]: a ranking, not money


async def resolve(conn: asyncpg.Connection, name: str) -> ResolvedModel | None:
    """The model ``name`` designates (a name, an alias or ``provider/name``), or None."""
    resolutions, rows = await naming.resolve_in_db(conn, [name], _ROW)
    found = resolutions[name]
    if found is None:
        return None
    row = rows[found.model]
    typed = {k: v for k, v in row.items() if k not in _NOT_TYPED and v is not None}
    return ResolvedModel(
        asked=name, name=row["name"], how=found.how, provider=row["provider"],
        mode=row["mode"], typed=typed, features=tuple(row["features"]),
        raw=json.loads(row["raw_text"], parse_float=Decimal),
        valid_from=row["valid_from"], retired_at=row["retired_at"],
    )


async def search(conn: asyncpg.Connection, query: str, limit: int = 10) -> list[ModelMatch]:
    """Models whose name looks like ``query`` (pg_trgm similarity), most similar first."""
    rows = await naming.search_in_db(conn, query, limit, _MATCH)
    return [ModelMatch(r["name"], r["provider"], r["mode"], r["retired_at"], float(r["score"]))
            for r in rows]


async def aliases_of(conn: asyncpg.Connection, model: str) -> list[str]:
    return [r["alias"] for r in await conn.fetch(_ALIASES_OF, model)]


async def catalog_is_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM models)")


@dataclass(frozen=True)
class CatalogState:
    """The catalog as projected, which an import is planned against."""

    models: dict[str, dict[str, Any]]  # live (not retired) model -> raw entry as stored
    aliases: dict[str, str]
    providers: frozenset[str]


async def read_catalog_state(conn: asyncpg.Connection) -> CatalogState:
    rows = await conn.fetch("SELECT name, raw::text AS raw FROM models WHERE retired_at IS NULL")
    # parse_float=Decimal: prices are compared exactly, never through a binary float.
    models = {r["name"]: json.loads(r["raw"], parse_float=Decimal) for r in rows}
    aliases = {r["alias"]: r["model"] for r in await conn.fetch(
        "SELECT alias, model FROM model_aliases")}
    providers = frozenset(r["name"] for r in await conn.fetch("SELECT name FROM providers"))
    return CatalogState(models, aliases, providers)


async def live_model_count(conn: asyncpg.Connection) -> int:
    """Models not retired."""
    return int(await conn.fetchval("SELECT count(*) FROM models WHERE retired_at IS NULL"))
