"""The post-commit invalidation message from projectors to read models.

A projector sends ``NOTIFY ledger_invalidate, <json>`` inside the transaction that changed the
rows; PostgreSQL delivers it only if and when that transaction commits, so a read model that
evicts on receipt can never refill its cache from data older than the event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

CHANNEL = "ledger_invalidate"
# PostgreSQL's payload limit is 8000 bytes; stay well below it and split larger messages.
_MAX_PAYLOAD = 7000


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What changed: key hashes and ids, model names and aliases, keys whose spend moved."""

    key_hashes: frozenset[str] = field(default_factory=frozenset)
    key_ids: frozenset[str] = field(default_factory=frozenset)
    models: frozenset[str] = field(default_factory=frozenset)  # names and aliases
    spend_key_ids: frozenset[str] = field(default_factory=frozenset)
    flush_all: bool = False

    def is_empty(self) -> bool:
        return not (self.key_hashes or self.key_ids or self.models or self.spend_key_ids
                    or self.flush_all)


_FIELDS = {"h": "key_hashes", "k": "key_ids", "m": "models", "s": "spend_key_ids"}


def encode(change: Invalidation) -> list[str]:
    """One or more JSON payloads, each under PostgreSQL's NOTIFY limit."""
    if change.flush_all:
        return [json.dumps({"all": True})]
    payloads: list[str] = []
    current: dict[str, list[str]] = {}
    size = 2
    for short, name in _FIELDS.items():
        for value in sorted(getattr(change, name)):
            # Measured as written: json.dumps escapes non-ASCII (\uXXXX, up to 12 bytes a
            # character), so the UTF-8 length of the value would undercount it.
            cost = len(json.dumps(value)) + 8
            if size + cost > _MAX_PAYLOAD and current:
                payloads.append(json.dumps(current, separators=(",", ":")))
                current, size = {}, 2
            current.setdefault(short, []).append(value)
            size += cost
    if current:
        payloads.append(json.dumps(current, separators=(",", ":")))
    return payloads


def decode(payload: str) -> Invalidation:
    """Parse one payload; anything unreadable means "flush everything" (safe side)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return Invalidation(flush_all=True)
    if not isinstance(data, dict) or data.get("all"):
        return Invalidation(flush_all=True)
    values: dict[str, frozenset[str]] = {}
    for short, name in _FIELDS.items():
        items = data.get(short, [])
        if not isinstance(items, list):
            return Invalidation(flush_all=True)
        values[name] = frozenset(str(item) for item in items)
    return Invalidation(
        key_hashes=values["key_hashes"], key_ids=values["key_ids"], models=values["models"],
        spend_key_ids=values["spend_key_ids"],
    )


def merge(changes: Iterable[Invalidation]) -> Invalidation:
    key_hashes: set[str] = set()
    key_ids: set[str] = set()
    models: set[str] = set()
    spend: set[str] = set()
    for change in changes:
        if change.flush_all:
            return Invalidation(flush_all=True)
        key_hashes |= change.key_hashes
        key_ids |= change.key_ids
        models |= change.models
        spend |= change.spend_key_ids
    return Invalidation(frozenset(key_hashes), frozenset(key_ids), frozenset(models),
                        frozenset(spend))

