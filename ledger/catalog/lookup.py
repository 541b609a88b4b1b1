"""Name resolution and fuzzy search over the projected catalog (``models``, ``model_aliases``).

A name resolves, first match wins, as:

1. a model of that exact name that is a model in its own right (not an ``alias_of`` entry);
2. an alias (``model_aliases``: the price map's ``alias_of`` entries, or set by hand);
3. ``provider/rest`` where ``rest`` is a model of that provider (``openai/gpt-4o``);
4. ``provider/alias`` where the alias's model belongs to that provider;
5. the exact name even when it is an ``alias_of`` entry whose target is unknown, so a
   dangling alias can still be shown.

Provider-prefixed names are a rule here rather than rows in ``model_aliases``: they follow
from ``models.provider``, so they can never disagree with it. Live models win over retired
ones at the same rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ledger.catalog.record import ModelRecord

__all__ = ["ModelMatch", "ResolvedModel", "aliases_of", "catalog_is_empty", "resolve", "search"]

# $1: the name as asked; $2, $3: its provider and rest when it contains a slash, else NULL.
_RESOLVE = """
WITH candidate (name, how, rank) AS (
    SELECT name, 'name', 1 FROM models
     WHERE name = $1 AND NOT raw ? 'alias_of'
    UNION ALL
    SELECT model, 'alias', 2 FROM model_aliases
     WHERE alias = $1
    UNION ALL
    SELECT name, 'provider prefix', 3 FROM models
     WHERE name = $3 AND provider = $2
    UNION ALL
    SELECT a.model, 'provider prefix and alias', 4 FROM model_aliases a
      JOIN models target ON target.name = a.model
     WHERE a.alias = $3 AND target.provider = $2
    UNION ALL
    SELECT name, 'name (dangling alias)', 5 FROM models
     WHERE name = $1
)
SELECT m.*, m.raw::text AS raw_text, c.how
  FROM candidate c
  JOIN models m ON m.name = c.name
 ORDER BY c.rank, m.retired_at IS NOT NULL
 LIMIT 1
"""

# Candidates: the query is similar to a *part* of the name ("<%", word similarity, so
# "gpt4o" finds "gpt-4o-mini" too) or a substring of it (ILIKE); both use the trigram index.
# Ranking: similarity to the *whole* name, so the closest names come first.
MIN_WORD_SIMILARITY = 0.3
_SEARCH = r"""
SELECT name, provider, mode, retired_at, similarity(name, $1) AS score
  FROM models
 WHERE $1 <% name OR name ILIKE '%' || $2 || '%'
 ORDER BY score DESC, name
 LIMIT $3
"""

_ALIASES_OF = "SELECT alias FROM model_aliases WHERE model = $1 ORDER BY alias"

# Columns that are bookkeeping or shown separately, not typed catalog fields.
_NOT_TYPED = frozenset({
    "name", "provider", "mode", "raw", "raw_text", "how", "features", "valid_from",
    "retired_at", "updated_at",
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


def _split(name: str) -> tuple[str | None, str | None]:
    provider, slash, rest = name.partition("/")
    return (provider, rest) if slash and provider and rest else (None, None)


async def resolve(conn: asyncpg.Connection, name: str) -> ResolvedModel | None:
    """The model ``name`` designates (a name, an alias or ``provider/name``), or None."""
    provider, rest = _split(name)
    row = await conn.fetchrow(_RESOLVE, name, provider, rest)
    if row is None:
        return None
    typed = {k: v for k, v in row.items() if k not in _NOT_TYPED and v is not None}
    return ResolvedModel(
        asked=name, name=row["name"], how=row["how"], provider=row["provider"],
        mode=row["mode"], typed=typed, features=tuple(row["features"]),
        raw=json.loads(row["raw_text"], parse_float=Decimal),
        valid_from=row["valid_from"], retired_at=row["retired_at"],
    )


async def search(conn: asyncpg.Connection, query: str, limit: int = 10) -> list[ModelMatch]:
    """Models whose name looks like ``query`` (pg_trgm similarity), most similar first."""
    if not query.strip():
        return []
    pattern = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    async with conn.transaction():
        # pg_trgm's default word threshold (0.6) misses close spellings such as "gpt4o".
        await conn.execute(
            f"SET LOCAL pg_trgm.word_similarity_threshold = {MIN_WORD_SIMILARITY}")
        rows = await conn.fetch(_SEARCH, query, pattern, limit)
    return [ModelMatch(r["name"], r["provider"], r["mode"], r["retired_at"], float(r["score"]))
            for r in rows]


async def aliases_of(conn: asyncpg.Connection, model: str) -> list[str]:
    return [r["alias"] for r in await conn.fetch(_ALIASES_OF, model)]


async def catalog_is_empty(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM models)")
