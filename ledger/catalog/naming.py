"""The one rule that turns a model name as asked into a catalog model, and the one search.

Every caller resolves names here: the projector's pricer and re-pricing, the read models' hot
path (``get_by_name``, ``authorize``), the CLI's database lookups (``ledger models show``,
``ledger cost``) and, when no database answers, ``ledger cost`` over the packaged price map
(``ledger.catalog.berriai.resolve_model_name``). The catalog importer resolves nothing: it
only copies the price map's ``alias_of`` entries into ``model_aliases``. The rule is plain
Python over the few catalog rows a name can reach; the database callers fetch exactly those
rows with :func:`candidates_sql` (one round trip for any number of names), the price map
supplies them from memory.

First match wins, and a name resolves as:

1. ``name``: a model of that exact name that is a model in its own right (not an
   ``alias_of`` entry of the price map);
2. ``alias``: an alias (``model_aliases``: the price map's ``alias_of`` entries, or set by
   an operator) whose model exists;
3. ``provider prefix``: ``provider/rest`` where ``rest`` is a model whose provider (the
   ``provider`` column, the price map's ``litellm_provider``) is ``provider``
   (``openai/gpt-4o``); the split is at the first slash, so ``rest`` may hold more slashes;
4. ``provider prefix and alias``: ``provider/rest`` where ``rest`` is an alias whose model's
   provider is ``provider``;
5. to 8. the same four, ignoring case: ASCII letters compare without their case (``A`` =
   ``a``; other characters as they are). When several names differ only in case, the first
   in code-point order wins;
9. ``name (dangling alias)``: the exact name of an ``alias_of`` entry that no rule above
   reached (no alias was made of it: its target is missing, or a cycle), resolved to itself so
   that it can still be shown (it has no prices).

Nothing else resolves: an unknown name, a prefix naming another provider, a prefix before a
model that has no provider, or a name with surrounding spaces (nothing is trimmed) is None.
Which rule matched is the ``how`` of the :class:`Resolution`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "CANDIDATE_COLUMNS",
    "MANY_NAMES",
    "MIN_WORD_SIMILARITY",
    "ONE_NAME",
    "Entry",
    "NameIndex",
    "Resolution",
    "candidates_sql",
    "fold",
    "index_of",
    "lookup_keys",
    "one_name_keys",
    "resolve",
    "resolve_in_db",
    "search_in_db",
    "search_sql",
    "split",
]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """``name`` with ASCII letters lowercased: what "ignoring case" compares.

    PostgreSQL computes the same with ``lower(name COLLATE "C")`` whatever the database's
    locale, which is what :func:`candidates_sql` and migration 0005's indexes use.
    """
    return name.translate(_ASCII_LOWER)


def split(name: str) -> tuple[str, str] | None:
    """(provider, rest) of ``provider/rest`` at the first slash, or None."""
    provider, slash, rest = name.partition("/")
    return (provider, rest) if slash and provider and rest else None


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalog entry as far as naming goes: a ``models`` row or a price-map entry."""

    name: str
    provider: str | None
    alias_of: bool  # an alias_of entry of the price map: a name for another model


@dataclass(frozen=True, slots=True)
class Resolution:
    asked: str
    model: str  # the canonical model name
    how: str  # which rule matched, e.g. "alias" or "provider prefix (ignoring case)"


class NameIndex:
    """The entries and aliases a resolution may look at (all of them, or the candidates)."""

    def __init__(self, entries: Iterable[Entry], aliases: Mapping[str, str]) -> None:
        self._entries: dict[str, Entry] = {}
        self._folded: dict[str, list[Entry]] = {}
        for entry in entries:
            self._entries[entry.name] = entry
            self._folded.setdefault(fold(entry.name), []).append(entry)
        # Only aliases whose model exists count: a dangling alias designates nothing.
        self._aliases = {a: m for a, m in aliases.items() if m in self._entries}
        self._folded_aliases: dict[str, list[str]] = {}
        for alias in self._aliases:
            self._folded_aliases.setdefault(fold(alias), []).append(alias)

    @classmethod
    def from_price_map(
        cls, price_map: Mapping[str, Mapping[str, Any]], aliases: Mapping[str, str]
    ) -> NameIndex:
        """A price map's entries, with ``aliases`` (alias -> canonical model) beside them."""
        entries = []
        for name, entry in price_map.items():
            provider = entry.get("litellm_provider")
            entries.append(Entry(name, provider if isinstance(provider, str) and provider
                                 else None, "alias_of" in entry))
        return cls(entries, aliases)

    def entry(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def _names(self, name: str, folded: bool) -> list[Entry]:
        if not folded:
            found = self._entries.get(name)
            return [] if found is None else [found]
        return self._folded.get(fold(name), [])

    def _alias_targets(self, alias: str, folded: bool) -> list[tuple[str, Entry]]:
        names = self._folded_aliases.get(fold(alias), []) if folded else (
            [alias] if alias in self._aliases else [])
        return [(a, self._entries[self._aliases[a]]) for a in names]

    def models_named(self, name: str, folded: bool) -> list[Entry]:
        return [e for e in self._names(name, folded) if not e.alias_of]

    def aliased(self, alias: str, folded: bool) -> list[tuple[str, Entry]]:
        """(alias, its model) for the aliases spelled ``alias``."""
        return self._alias_targets(alias, folded)


def _same(a: str | None, b: str, folded: bool) -> bool:
    return a is not None and (fold(a) == fold(b) if folded else a == b)


def _first(found: Iterable[tuple[str, Entry]]) -> Entry | None:
    """The entry reached through the first spelling in code-point order."""
    ordered = sorted(found, key=lambda pair: pair[0])
    return ordered[0][1] if ordered else None


def resolve(asked: str, names: NameIndex) -> Resolution | None:
    """The model ``asked`` designates under the rule of this module's docstring, or None."""
    prefixed = split(asked)
    for folded in (False, True):
        suffix = " (ignoring case)" if folded else ""
        rules: list[tuple[str, Entry | None]] = [
            ("name", _first((e.name, e) for e in names.models_named(asked, folded))),
            ("alias", _first(names.aliased(asked, folded))),
        ]
        if prefixed is not None:
            provider, rest = prefixed
            rules.append(("provider prefix", _first(
                (e.name, e) for e in names.models_named(rest, folded)
                if _same(e.provider, provider, folded))))
            rules.append(("provider prefix and alias", _first(
                (a, e) for a, e in names.aliased(rest, folded)
                if _same(e.provider, provider, folded))))
        for how, entry in rules:
            if entry is not None:
                return Resolution(asked, entry.name, how + suffix)
    entry = names.entry(asked)
    if entry is not None and entry.alias_of:
        return Resolution(asked, entry.name, "name (dangling alias)")
    return None


def lookup_keys(asked: Iterable[str]) -> list[str]:
    """What :func:`candidates_sql` looks up for these names: each folded, and its rest."""
    keys: set[str] = set()
    for name in asked:
        keys.add(fold(name))
        prefixed = split(name)
        if prefixed is not None:
            keys.add(fold(prefixed[1]))
    return sorted(keys)


def one_name_keys(name: str) -> tuple[str, str]:
    """The two parameters of ``candidates_sql(..., keys=ONE_NAME)`` for one name."""
    prefixed = split(name)
    return fold(name), fold(prefixed[1] if prefixed is not None else name)


MANY_NAMES = "= ANY($1::text[])"  # $1: lookup_keys(names)
# $1, $2: one_name_keys(name). Two scalars let PostgreSQL keep one generic plan for the hot
# path's lookup (0.3 ms); an array parameter makes it plan every call (about 1 ms more).
ONE_NAME = "IN ($1, $2)"

CANDIDATE_COLUMNS = "m.name, m.provider, m.raw ? 'alias_of' AS is_alias_entry"


def candidates_sql(columns: str = "", *, keys: str = MANY_NAMES) -> str:
    """Every ``models`` row a name can resolve to (the keys: ``MANY_NAMES`` or ``ONE_NAME``).

    A row comes with the aliases spelled like a key that point at it (``aliases``), so one
    round trip answers any number of names. ``columns`` adds more of the row (prefix ``m.``).
    The ``lower(... COLLATE "C")`` lookups use migration 0005's indexes.
    """
    extra = f", {columns}" if columns else ""
    return f"""
SELECT {CANDIDATE_COLUMNS},
       ARRAY(SELECT a.alias FROM model_aliases a
              WHERE a.model = m.name AND lower(a.alias COLLATE "C") {keys}) AS aliases{extra}
  FROM models m
 WHERE m.name IN (SELECT name FROM models WHERE lower(name COLLATE "C") {keys}
                  UNION
                  SELECT model FROM model_aliases WHERE lower(alias COLLATE "C") {keys})
"""


def index_of(rows: Iterable[asyncpg.Record]) -> NameIndex:
    """The NameIndex of the rows :func:`candidates_sql` returned."""
    entries, aliases = [], {}
    for row in rows:
        entries.append(Entry(row["name"], row["provider"], bool(row["is_alias_entry"])))
        for alias in row["aliases"] or ():
            aliases[alias] = row["name"]
    return NameIndex(entries, aliases)


async def resolve_in_db(
    conn: asyncpg.Connection, asked: Iterable[str], columns: str = ""
) -> tuple[dict[str, Resolution | None], dict[str, asyncpg.Record]]:
    """Resolve names against the projected catalog in one query.

    Returns each name's resolution and the fetched rows by model name (with ``columns``).
    """
    names = sorted(set(asked))
    if not names:
        return {}, {}
    rows = await conn.fetch(candidates_sql(columns), lookup_keys(names))
    index = index_of(rows)
    return {name: resolve(name, index) for name in names}, {r["name"]: r for r in rows}


# -- search ------------------------------------------------------------------------------------

# Candidates: the query is similar to a *part* of the name ("<%", word similarity, so "gpt4o"
# finds "gpt-4o-mini" too) or a substring of it (ILIKE); both use the trigram index.
# Ranking: similarity to the *whole* name, so the closest names come first; then by name.
MIN_WORD_SIMILARITY = 0.3


def search_sql(columns: str) -> str:
    """The search: ``$1`` the query, ``$2`` it as an ILIKE-escaped pattern, ``$3`` the limit.

    Run it inside a transaction after ``SET LOCAL pg_trgm.word_similarity_threshold``
    (:func:`search_in_db` does); pg_trgm's default word threshold (0.6) misses close
    spellings such as "gpt4o".
    """
    return f"""
SELECT {columns}, similarity(m.name, $1) AS score
  FROM models m
 WHERE $1 <% m.name OR m.name ILIKE '%' || $2 || '%'
 ORDER BY score DESC, m.name
 LIMIT $3
"""


def _pattern(query: str) -> str:
    return query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_in_db(
    conn: asyncpg.Connection, query: str, limit: int, columns: str
) -> list[asyncpg.Record]:
    """Models whose name looks like ``query``, best first: the one ranking every caller uses."""
    if not query.strip():
        return []
    async with conn.transaction(readonly=True):
        await conn.execute(
            f"SET LOCAL pg_trgm.word_similarity_threshold = {MIN_WORD_SIMILARITY}")
        rows: list[asyncpg.Record] = await conn.fetch(
            search_sql(columns), query, _pattern(query), limit)
    return rows
