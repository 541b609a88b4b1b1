"""Reading BerriAI's ``model_prices_and_context_window.json`` and comparing two versions.

Everything here is pure: bytes or a path in, plain data out. The import command turns the
results into ProviderUpserted / ModelUpserted / ModelAliasSet / ModelRetired events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ledger.catalog.naming import NameIndex, resolve

__all__ = [
    "SAMPLE_SPEC",
    "SNAPSHOT_LITELLM_VERSION",
    "CatalogDiff",
    "ProviderInfo",
    "aliases_from_price_map",
    "diff_catalog",
    "load_price_map",
    "load_snapshot",
    "providers_from_price_map",
    "resolve_model_name",
    "snapshot_path",
]

SAMPLE_SPEC = "sample_spec"  # documents the format; it is not a model
SNAPSHOT_LITELLM_VERSION = "1.110.2"
_SNAPSHOT = Path(__file__).parent / "data" / "model_prices_and_context_window.json"


def snapshot_path() -> Path:
    """The price map shipped inside the package (from litellm, see data/LICENSE-litellm)."""
    return _SNAPSHOT


def load_price_map(source: str | os.PathLike[str] | bytes) -> dict[str, dict[str, Any]]:
    """Parse a BerriAI price map: ``{model name: entry}``, without ``sample_spec``.

    Numbers that are not integers come back as ``Decimal`` parsed from their JSON text, so
    ``1e-06`` is exactly one millionth. An entry that is not a JSON object is kept, wrapped
    as ``{"_unparsed": value}``, because every entry must survive the import.
    Raises ``ValueError`` when the document is not JSON or not an object at the top.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        # NaN/Infinity become Decimals too, so no float ever enters; to_price rejects them.
        document = json.loads(data, parse_float=Decimal, parse_constant=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"price map is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("price map must be a JSON object of model name -> entry")
    return {
        str(name): entry if isinstance(entry, dict) else {"_unparsed": entry}
        for name, entry in document.items()
        if name != SAMPLE_SPEC
    }


def load_snapshot() -> dict[str, dict[str, Any]]:
    return load_price_map(snapshot_path())


# -- aliases ---------------------------------------------------------------------------------


def aliases_from_price_map(price_map: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Alias name -> canonical model name, from the ``alias_of`` entries.

    ``{"alias_of": "azure/gpt-6-astra"}`` is followed through chains to an entry that is a
    model; dangling or cyclic aliases are left out. These are the aliases the importer turns
    into ``model_aliases`` rows. Provider-prefixed names (``openai/gpt-4o``) are not aliases:
    they are a rule of name resolution (``ledger.catalog.naming``), derived from
    ``litellm_provider``, so they can never disagree with it.
    """
    aliases: dict[str, str] = {}
    for name, entry in price_map.items():
        target = entry.get("alias_of")
        if isinstance(target, str):
            canonical = _follow_alias(name, price_map)
            if canonical is not None:
                aliases[name] = canonical
    return aliases


def _follow_alias(name: str, price_map: Mapping[str, Mapping[str, Any]]) -> str | None:
    seen = {name}
    current = name
    while True:
        target = price_map[current].get("alias_of")
        if not isinstance(target, str):
            return current if current != name else None
        if target in seen or target not in price_map:
            return None
        seen.add(target)
        current = target


def resolve_model_name(
    name: str,
    price_map: Mapping[str, Mapping[str, Any]],
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """The name of the price-map entry ``name`` resolves to, or None when it resolves to none.

    The rule is ``ledger.catalog.naming``'s, the one the database callers use, applied to the
    price map's entries: the exact name, an alias, ``provider/name`` or ``provider/alias``
    (the provider being an entry's ``litellm_provider``), then the same ignoring ASCII case;
    last, an ``alias_of`` entry no alias was made of (dangling or cyclic) is itself. Which
    rule matched is not returned. ``aliases`` is the alias table (default: the map's
    ``alias_of`` entries followed to a model, :func:`aliases_from_price_map`); pass it to
    reuse one or to add operators' aliases. ``ledger cost`` uses this when no database
    answers.
    """
    table = aliases if aliases is not None else aliases_from_price_map(price_map)
    found = resolve(name, NameIndex.from_price_map(price_map, table))
    return None if found is None else found.model


# -- providers -------------------------------------------------------------------------------


class ProviderInfo(BaseModel):
    """What the price map says about a provider (``litellm_provider``).

    The map has no base URL, API version or auth scheme; those fields exist so the
    ProviderUpserted event has one shape whether the data came from here or an operator.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    model_count: int
    modes: frozenset[str]
    features: frozenset[str]  # supports_* flags true on at least one of its models
    supported_endpoints: frozenset[str]
    base_url: str | None = None
    api_version: str | None = None
    auth_scheme: str | None = None
    config: dict[str, Any] = {}


def providers_from_price_map(price_map: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderInfo]:
    """Distinct ``litellm_provider`` values, each with what its models reveal."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in price_map.values():
        provider = entry.get("litellm_provider")
        if isinstance(provider, str) and provider:
            grouped.setdefault(provider, []).append(entry)
    result: dict[str, ProviderInfo] = {}
    for provider, entries in sorted(grouped.items()):
        modes = {e["mode"] for e in entries if isinstance(e.get("mode"), str)}
        features = {
            k for e in entries for k, v in e.items() if k.startswith("supports_") and v is True
        }
        endpoints = {
            p
            for e in entries
            if isinstance(e.get("supported_endpoints"), list)
            for p in e["supported_endpoints"]
            if isinstance(p, str)
        }
        result[provider] = ProviderInfo(
            name=provider,
            model_count=len(entries),
            modes=frozenset(modes),
            features=frozenset(features),
            supported_endpoints=frozenset(endpoints),
        )
    return result


# -- diff ------------------------------------------------------------------------------------


class CatalogDiff(BaseModel):
    """How ``current`` differs from ``previous``; every name is in exactly one tuple.

    ``changed`` means the entry's content differs; ``retired`` means it is gone from
    ``current``. Names are sorted so the emitted events come in a stable order.
    """

    model_config = ConfigDict(frozen=True)

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (self.added or self.changed or self.retired)


def diff_catalog(
    previous: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]
) -> CatalogDiff:
    """Compare two price maps by content (``sample_spec`` ignored in both).

    Values are compared after canonicalising numbers (``1e-06``, ``0.000001`` and
    ``Decimal("1E-6")`` are one price) while keeping ``true`` distinct from ``1``, so
    re-reading the same file through a different JSON parser is never a change.
    """
    before = {k: _canonical(v) for k, v in previous.items() if k != SAMPLE_SPEC}
    after = {k: _canonical(v) for k, v in current.items() if k != SAMPLE_SPEC}
    common = before.keys() & after.keys()
    return CatalogDiff(
        added=tuple(sorted(after.keys() - before.keys())),
        changed=tuple(sorted(k for k in common if before[k] != after[k])),
        retired=tuple(sorted(before.keys() - after.keys())),
        unchanged=tuple(sorted(k for k in common if before[k] == after[k])),
    )


def _canonical(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return ("b", value) if isinstance(value, bool) else value
    if isinstance(value, float):
        return ("n", Decimal(repr(value)).normalize()) if value == value else ("nan",)
    if isinstance(value, int):
        return ("n", Decimal(value).normalize())
    if isinstance(value, Decimal):
        return ("n", value.normalize()) if value.is_finite() else ("nan", str(value))
    if isinstance(value, Mapping):
        return ("m", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("l", tuple(_canonical(v) for v in value))
    return ("o", repr(value))
