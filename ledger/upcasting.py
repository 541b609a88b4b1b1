"""Reading events written with an older schema version: dict-level upcasters.

An event once written stays readable forever. Each upcaster turns the dict of version N
of one event type into version N+1; ``parse_event`` chains them up to the current version
and then validates the result with the current model. Upcasters never touch the envelope's
``event_id``, so an upcast event deduplicates with its original.

This is the slow path: ``parse_event`` only comes here when the one-shot
``validate_json`` of the current models failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from ledger.codec import decode_error_from, mentions_constant, refuse_constant
from ledger.events import CURRENT_VERSIONS, EVENT_ADAPTER, Event, UsageRecorded
from ledger.exceptions import (
    EventDecodeError,
    UnknownEventTypeError,
    UnsupportedSchemaVersionError,
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _usage_recorded_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """usage.recorded v1 -> v2: provider-neutral token names and an explicit USD cost.

    v1 carried ``tokens_in``/``tokens_out`` and ``cost`` (USD, a decimal string or null)
    and knew none of the cache/audio/reasoning/media counters, which v2 defaults to 0.
    """
    new = dict(old)
    new["prompt_tokens"] = new.pop("tokens_in", None)
    new["completion_tokens"] = new.pop("tokens_out", None)
    new["cost_usd"] = new.pop("cost", None)
    new["schema_version"] = 2
    return new


_USAGE_V3_FIELDS = ("service_tier", "data_residency", "vertex_location", "inference_geo")


def _usage_recorded_v2_to_v3(old: dict[str, Any]) -> dict[str, Any]:
    """usage.recorded v2 -> v3: how the request was served, for its price.

    v2 knew no service tier and no region: an old event was served at the standard tier
    with no regional uplift, so the four new fields are null. A v2 message that already
    carries one of them is not a v2 message and is refused rather than half-read.
    """
    present = [field for field in _USAGE_V3_FIELDS if field in old]
    if present:
        raise EventDecodeError(
            f"{', '.join(present)}: not a field of usage.recorded schema_version 2"
        )
    new = dict(old)
    new.update(dict.fromkeys(_USAGE_V3_FIELDS))
    new["schema_version"] = 3
    return new


def _usage_recorded_v3_to_v4(old: dict[str, Any]) -> dict[str, Any]:
    """usage.recorded v3 -> v4: generated images get a field of their own.

    v3 had one image counter, ``images``, priced as input images; it keeps that meaning, and
    ``output_images`` (the images the model generated) is 0 for an old event. A v3 message
    that already carries ``output_images`` is not a v3 message and is refused.
    """
    if "output_images" in old:
        raise EventDecodeError("output_images: not a field of usage.recorded schema_version 3")
    new = dict(old)
    new["output_images"] = 0
    new["schema_version"] = 4
    return new


# (event type, version it reads) -> upcaster producing version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("usage.recorded", 1): _usage_recorded_v1_to_v2,
    ("usage.recorded", 2): _usage_recorded_v2_to_v3,
    ("usage.recorded", 3): _usage_recorded_v3_to_v4,
}


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Raise ``data`` (a decoded event dict) to its type's current schema version.

    Raises UnknownEventTypeError / UnsupportedSchemaVersionError / EventDecodeError.
    """
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in CURRENT_VERSIONS:
        raise UnknownEventTypeError(event_type)
    current = CURRENT_VERSIONS[event_type]
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventDecodeError(f"schema_version: must be a positive integer, got {version!r}")
    if version > current:
        raise UnsupportedSchemaVersionError(event_type, version, current)
    while version < current:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise EventDecodeError(f"{event_type} schema_version {version} has no upcaster")
        data = step(data)
        version += 1
    return data


class _UsageRecordedV3(UsageRecorded):
    """usage.recorded v3 as written: v4's fields, its version, and no ``output_images``."""

    schema_version: Literal[3] = 3  # type: ignore[assignment]


_V3_VALIDATOR = _UsageRecordedV3.__pydantic_validator__
_new_object, _set_attribute = object.__new__, object.__setattr__
_OUTPUT_IMAGES = frozenset({"output_images"})
_NAMED = frozenset({"type", "schema_version"})


def _usage_recorded_v3(raw: bytes | str) -> UsageRecorded | None:
    """A usage.recorded v3 message as v4, in one validation of its JSON and one of its values
    (the whole decode of a v3 message: 117 -> 49 us here; 18 us for v4): v3 is what most events
    stored before v4 say. None for anything else, which the dict route then reads, refuses
    and words: a message without a type or version, with ``output_images``, with NaN or Infinity.
    tests/ledger/test_upcasting_v3.py holds both routes to the same answers."""
    try:
        old = _V3_VALIDATOR.validate_json(raw)
    except ValidationError:
        return None
    given = old.model_fields_set
    # The model's defaults would read a message without a type or a version as v3 usage.
    if (not given >= _NAMED or "output_images" in given or mentions_constant(raw)):
        return None
    # What _usage_recorded_v3_to_v4 makes of it. Its values passed v4's own field rules (the
    # v3 model is v4's, but for the version), so the v4 event is made from them as pydantic
    # makes a copy, without validating them a second time (a third of this route's time).
    state = old.__dict__.copy()
    state["schema_version"] = 4  # and output_images: already its default, 0
    current = _new_object(UsageRecorded)
    _set_attribute(current, "__dict__", state)
    _set_attribute(current, "__pydantic_fields_set__", given | _OUTPUT_IMAGES)
    _set_attribute(current, "__pydantic_extra__", None)
    _set_attribute(current, "__pydantic_private__", None)
    return current


def decode_slow_path(raw: bytes | str, fast_error: ValidationError) -> Event:
    """Classify a message the fast path rejected, upcasting it when it is merely old."""
    if _may_be_usage(raw):
        current = _usage_recorded_v3(raw)
        if current is not None:
            return current
    return decode_by_dict(raw, fast_error)


def _may_be_usage(raw: bytes | str) -> bool:
    # A byte search keeps the other types' failures off the v3 attempt; a type written with
    # JSON escapes goes the dict route, which reads it all the same.
    if isinstance(raw, str):
        return '"usage.recorded"' in raw
    return not isinstance(raw, bytes | bytearray) or b'"usage.recorded"' in raw


def decode_by_dict(raw: bytes | str, fast_error: ValidationError) -> Event:
    """The general route: the message as a dict, upcast step by step, validated again."""
    try:
        data = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, NaN, absurd nesting
        raise EventDecodeError(f"invalid JSON: {error}") from error
    if not isinstance(data, dict):
        raise EventDecodeError(f"an event must be a JSON object, got {type(data).__name__}")
    upcast_data = upcast(data)
    if upcast_data is data:
        # Already current: the fast path's error is the real schema violation.
        raise decode_error_from(fast_error)
    try:
        # Through JSON again, so an upcast event is held to the rules of the JSON input it
        # came from (a JSON string, not a Python object, for each timestamp and decimal).
        return EVENT_ADAPTER.validate_json(json.dumps(upcast_data))
    except ValidationError as error:
        raise decode_error_from(error) from error
