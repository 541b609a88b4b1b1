"""The one decode path and the one encoding of events: bytes <-> the current-version model.

``parse_event`` is what every reader uses (the projector, rebuild, dlq replay, the schema
property test); ``dump_event`` what the producer writes.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from ledger.events import EVENT_ADAPTER, ApiKeyUpdated, Event, EventBase, UsageRecorded
from ledger.exceptions import EventDecodeError

_ALWAYS_WRITTEN = frozenset({"type", "schema_version"})


def dump_usage(event: EventBase) -> bytes:
    """The JSON of a ``UsageRecorded``, written from its fields' values by type.

    Every field of UsageRecorded is written as its type is by default (no serializer of its
    own, no alias, no exclusion), so these are the model serializer's bytes, in about two
    thirds of its time: one is written per LLM call by every gateway.
    tests/ledger/test_codec.py holds the two equal over generated events; a field given a
    serializer of its own must leave this path.
    """
    return to_json(event.__dict__)


def dump_event(event: EventBase) -> bytes:
    """Compact UTF-8 JSON of ``event``; an ApiKeyUpdated keeps only the fields it sets."""
    cls = type(event)
    if cls is UsageRecorded:
        return dump_usage(event)
    if cls is ApiKeyUpdated:
        # The fields it sets, and always the envelope's type and schema_version.
        written = event.model_fields_set | _ALWAYS_WRITTEN
        return event.model_dump_json(include=written).encode()
    # The bound serializer skips model_dump_json's argument handling.
    return event.__pydantic_serializer__.to_json(event)


def parse_event(data: bytes | str | None) -> Event:
    """Decode one message body into its current-version model.

    The common case (current schema version) is a single ``validate_json``; only when that
    fails is the JSON loaded as a dict to tell an old version (upcast it), a newer one or an
    unknown type (distinct errors, for dead-lettering) from a plain schema violation.
    """
    if not isinstance(data, bytes | bytearray | memoryview | str):
        # A tombstone (null value) or anything else that is not a message body.
        kind = "a null value (tombstone)" if data is None else type(data).__name__
        raise EventDecodeError(f"not an event: {kind}")
    try:
        event = EVENT_ADAPTER.validate_json(data)
    except ValidationError as fast_error:
        # Imported here because upcasting imports this module's models.
        from ledger.upcasting import decode_slow_path

        return decode_slow_path(data, fast_error)
    if "schema_version" not in event.model_fields_set:
        # The model's default would read a message without a version as the current one.
        raise EventDecodeError("schema_version: Field required")
    if mentions_constant(data):
        try:  # rare: only a body that contains the words at all pays for a second parse
            json.loads(data if not isinstance(data, memoryview) else bytes(data),
                       parse_constant=refuse_constant)
        except ValueError as error:
            raise EventDecodeError(f"invalid JSON: {error}") from error
    return event


def refuse_constant(name: str) -> Any:
    """json.loads' parse_constant: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def mentions_constant(data: bytes | bytearray | memoryview | str) -> bool:
    # pydantic's parser takes NaN and Infinity, which JSON (and so the schema) does not
    # have: one left where no field looks at it (under a later duplicate key) would pass.
    if type(data) is bytes:  # what Kafka hands over: no union-type isinstance on the hot path
        # A one-byte search is a memchr; a word search took 1.4 us per ~700-byte event here.
        return (b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data)
    if isinstance(data, str):
        return "NaN" in data or "Infinity" in data
    view = data if isinstance(data, bytearray) else bytes(data)
    return b"NaN" in view or b"Infinity" in view


def describe_validation_error(error: ValidationError) -> str:
    """Compact "field: message" lines naming each offending field."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "<root>"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def decode_error_from(error: ValidationError) -> EventDecodeError:
    decode_error = EventDecodeError(describe_validation_error(error))
    decode_error.__cause__ = error
    return decode_error
