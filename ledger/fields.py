"""The field types of the event contract, with the bounds every field is held to.

Whatever a gateway in any language sends either fits the PostgreSQL columns and the month
arithmetic, or is refused while decoding, naming the field (and so becomes a dead letter) --
never an exception half-way through a projector batch. docs/events.md lists the bounds.

Each type carries the reader's rule and, through ``wire(name)``, the name of the JSON
Schema definition in ledger/schema.py that says the same thing;
tests/ledger/test_schema_property.py checks that a message is valid under the printed
schema exactly when ``parse_event`` accepts it. Text forms (timestamps, decimals, UUIDs)
are one regular expression each (ledger/wiretext.py), used by both.

The reader takes JSON's own types only: no number in a string, no epoch number for a time,
no boolean for a number. A number with a zero fraction (``1000.0``) is an integer, as in
JSON Schema. Python callers may also pass ``datetime``, ``UUID`` and ``Decimal`` objects,
which are held to what the writer will then put on the wire.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Final, Literal, get_args
from uuid import UUID

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import core_schema as cs

from ledger import wiretext

MAX_TEXT_LENGTH = 512  # names, ids, models, sources, codes
MAX_COUNT = 10**9  # tokens, images, characters, latency_ms of one event: monthly sums fit bigint
# Decimal maxima are powers of ten, which keeps their text rule a regular expression.
USD_DIGITS = 9
MAX_USD = Decimal(10**USD_DIGITS)  # one event's cost or one key's budget
SECONDS_DIGITS = 9
MAX_SECONDS = Decimal(10**SECONDS_DIGITS)
MAX_DECIMAL_PLACES = 30  # exact per-token prices times counts need ~20
# A decimal sent as a JSON number is the double it denotes. Every double from here up has a
# shortest form with at most 30 places (17 significant digits starting at the 14th), so it
# can be written back as a decimal string; a smaller non-zero one could not.
MIN_DECIMAL_NUMBER = 1e-14
# occurred_at / valid_from / expires_at: a fixed window of years as written (never "now"),
# so a live projector and a rebuild years later accept exactly the same events.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2099
EARLIEST = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC)
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
# Levels of objects and arrays in free-form JSON (raw, config), the field's own object being
# the first. A price-map entry has 5; the bound keeps every parser's recursion finite.
MAX_JSON_DEPTH = 16
_MAX_DOUBLE = sys.float_info.max

# WithJsonSchema cannot name a definition pydantic does not know, so a field's schema is
# this marker; ledger/schema.py replaces it with {"$ref": "#/$defs/<name>"}.
WIRE_MARKER: Final = "x-wire"


def wire(name: str) -> WithJsonSchema:
    return WithJsonSchema({WIRE_MARKER: name})


def _text(refused: str, min_length: int, max_length: int) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length,
                             pattern=f"^{wiretext.text_body(refused)}$")


def _anchored(body: str) -> str:
    return f"^(?:{body})$"


# The rules below are pydantic-core schemas rather than Python validators: a Python call per
# field would double the cost of decoding a usage event. Python runs only on rare paths (a
# float count, a null collection, a Python datetime or Decimal from a caller).


def _integral(value: float) -> int:
    if not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


@dataclass(frozen=True, slots=True)
class _JsonInteger:
    """A JSON integer; ``1000.0`` is one too, as in JSON Schema. No string, no boolean."""

    maximum: int

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        return cs.union_schema([
            cs.int_schema(strict=True, ge=0, le=self.maximum),
            cs.chain_schema([
                cs.float_schema(strict=True, allow_inf_nan=False, ge=0, le=self.maximum),
                cs.no_info_plain_validator_function(_integral),
            ]),
        ], custom_error_type="count",
            custom_error_message=f"must be a JSON integer from 0 to {self.maximum}")


@dataclass(frozen=True, slots=True)
class _Uuid:
    """8-4-4-4-12 hex digits; not the other spellings a UUID parser takes (urn:, {}, none)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        text = cs.custom_error_schema(
            cs.chain_schema([cs.str_schema(strict=True, pattern=_anchored(wiretext.UUID)),
                             cs.uuid_schema()]),
            "uuid_text", custom_error_message="must be a UUID written as 8-4-4-4-12 hex digits")
        return cs.json_or_python_schema(
            json_schema=text, python_schema=cs.union_schema([cs.uuid_schema(strict=True), text]))


def _in_window(value: datetime) -> datetime:
    # JSON text passed wiretext.TIMESTAMP; a Python datetime is held to what it will write.
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must be in the years {EARLIEST_YEAR}-{LATEST_YEAR} (as written)")
    offset = value.utcoffset()
    if offset is not None and (offset.seconds % 60 or offset.microseconds):
        raise ValueError("must have an offset of whole minutes")
    return value


@dataclass(frozen=True, slots=True)
class _Timestamp:
    """RFC 3339 text (wiretext.TIMESTAMP), never an epoch number; aware datetimes from Python."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        text = cs.custom_error_schema(
            cs.chain_schema([cs.str_schema(strict=True, pattern=_anchored(wiretext.TIMESTAMP)),
                             cs.datetime_schema(tz_constraint="aware")]),
            "timestamp_text", custom_error_message="must be an RFC 3339 timestamp with seconds "
            "and an offset, in the years 2000-2099, e.g. 2026-11-25T09:30:00.123Z")
        python = cs.no_info_after_validator_function(
            _in_window, cs.datetime_schema(strict=True, tz_constraint="aware"))
        return cs.json_or_python_schema(json_schema=text,
                                        python_schema=cs.union_schema([python, text]))


@cache
def decimal_regex(digits: int) -> re.Pattern[str]:
    return wiretext.compile_body(wiretext.decimal_text(digits, MAX_DECIMAL_PLACES))


@dataclass(frozen=True, slots=True)
class _Writable:
    """A caller's Decimal is written as str(value): hold it to what a reader accepts."""

    digits: int

    def __call__(self, value: Decimal) -> Decimal:
        written = str(value)
        too_long = len(written) > wiretext.MAX_DECIMAL_TEXT
        if too_long or decimal_regex(self.digits).fullmatch(written) is None:
            raise ValueError(f"{written} cannot be written as a decimal string")
        return value


@dataclass(frozen=True, slots=True)
class _WireDecimal:
    """A decimal string (wiretext.decimal_text) or a JSON number: 0, or MIN_DECIMAL_NUMBER up,
    to 10**digits.

    A number is read as the double it denotes, by its shortest form (what pydantic does with
    a float), so 0.1 is Decimal("0.1"); -0.0 is 0.
    """

    digits: int

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        maximum = 10**self.digits
        text = cs.str_schema(strict=True, max_length=wiretext.MAX_DECIMAL_TEXT,
                             pattern=_anchored(wiretext.decimal_text(self.digits,
                                                                     MAX_DECIMAL_PLACES)))
        wire_forms = cs.union_schema([
            cs.chain_schema([text, cs.decimal_schema()]),
            cs.chain_schema([cs.int_schema(strict=True, ge=0, le=maximum), cs.decimal_schema()]),
            cs.chain_schema([cs.float_schema(strict=True, allow_inf_nan=False,
                                             ge=MIN_DECIMAL_NUMBER, le=maximum),
                             cs.decimal_schema()]),
            cs.chain_schema([cs.float_schema(strict=True, ge=0, le=0),
                             cs.no_info_plain_validator_function(lambda _: Decimal(0))]),
        # At most one form can take a given JSON value, so the first that does is the answer:
        # "smart" mode went on to try the others (3 decimals: 8.5 -> 6.3 us per event).
        ], mode="left_to_right", custom_error_type="decimal", custom_error_message=(
            'must be a decimal string such as "0.000389" or "1.5E-7" (no sign, at most 30 '
            f"places, at most {maximum}) or a number: 0 or from {MIN_DECIMAL_NUMBER} to "
            f"{maximum}"))
        python = cs.no_info_after_validator_function(_Writable(self.digits), cs.decimal_schema(
            strict=True, ge=Decimal(0), le=Decimal(maximum)))
        return cs.json_or_python_schema(
            json_schema=wire_forms,
            python_schema=cs.union_schema([python, wire_forms], mode="left_to_right"))


@dataclass(frozen=True, slots=True)
class _NullAsEmpty:
    """Go writes a nil map or slice as null: it reads as the empty one."""

    empty: Callable[[], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> cs.CoreSchema:
        null = cs.chain_schema([cs.none_schema(),
                                cs.no_info_plain_validator_function(lambda _: self.empty())])
        return cs.union_schema([handler(source), null])


Uuid = Annotated[UUID, _Uuid(), wire("Uuid")]
NonEmptyStr = Annotated[str, _text(wiretext.PLAIN_TEXT_REFUSES, 1, MAX_TEXT_LENGTH), wire("Text")]
Count = Annotated[int, _JsonInteger(MAX_COUNT), wire("Count")]
Money = Annotated[Decimal, _WireDecimal(USD_DIGITS), wire("Usd")]
Seconds = Annotated[Decimal, _WireDecimal(SECONDS_DIGITS), wire("Seconds")]
Moment = Annotated[datetime, _Timestamp(), wire("Timestamp")]
Flag = Annotated[bool, Strict()]
MetadataKey = Annotated[str, _text(wiretext.PLAIN_TEXT_REFUSES, 1, MAX_METADATA_KEY_LENGTH),
                        wire("MetadataKey")]
MetadataValue = Annotated[str, _text(wiretext.FREE_TEXT_REFUSES, 0, MAX_METADATA_VALUE_LENGTH),
                          wire("MetadataValue")]
# Bounded so a misbehaving gateway cannot turn every usage row into an unbounded blob.
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_ENTRIES),
                     _NullAsEmpty(dict), wire("Metadata")]
Names = Annotated[list[NonEmptyStr], _NullAsEmpty(list), wire("Names")]
KeyHash = Annotated[str, StringConstraints(pattern=f"^{wiretext.KEY_HASH}$"), wire("KeyHash")]
BudgetScope = Annotated[str, StringConstraints(
    max_length=MAX_TEXT_LENGTH,
    pattern=_anchored(wiretext.budget_scope(wiretext.text_body(wiretext.PLAIN_TEXT_REFUSES)))),
    wire("BudgetScope")]
# Alert thresholds in percent of a budget's limit.
MAX_ALERT_PERCENT = 1000
Percent = Annotated[int, _JsonInteger(MAX_ALERT_PERCENT), wire("Percent")]


def _decimals_as_json_numbers(value: Any) -> Any:
    """Free-form JSON (a price-map entry, a provider config) keeps its numbers as numbers.

    pydantic writes a Decimal as a JSON string; inside ``raw``/``config`` that would turn
    the price map's ``2.5e-06`` into ``"0.0000025"``. A Decimal becomes a float only when
    the float's shortest repr reads back as exactly the same Decimal, so no value changes;
    one that a float cannot carry exactly stays a string.
    """
    if isinstance(value, Decimal):
        if value.is_finite():
            as_float = float(value)
            if Decimal(repr(as_float)) == value:
                return as_float
        return value
    if isinstance(value, dict):
        return {key: _decimals_as_json_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decimals_as_json_numbers(item) for item in value]
    return value


def _check_json(value: Any, room: int) -> None:
    """What jsonb and every JSON parser can hold: no NUL, finite doubles, bounded nesting."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        # NaN and Infinity are no JSON (the reader's parser takes them anyway), and a number
        # beyond the largest double is Infinity to JavaScript.
        if isinstance(value, Decimal):
            fits = value.is_finite() and abs(value) <= Decimal(_MAX_DOUBLE)
        elif isinstance(value, float):
            fits = not math.isnan(value) and abs(value) <= _MAX_DOUBLE
        else:
            fits = abs(value) <= _MAX_DOUBLE
        if not fits:
            raise ValueError("a number must be a finite double")
    elif isinstance(value, dict | list | tuple):
        if room <= 0:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_json(key, room)
            _check_json(item, room - 1)


def _free_json(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value, MAX_JSON_DEPTH)
    return value


FreeJson = Annotated[
    dict[str, Any],
    AfterValidator(_free_json),
    PlainSerializer(_decimals_as_json_numbers, when_used="json"),
    wire("JsonObject"),
]
# provider.upserted's config: null (Go's nil map) reads as {}.
FreeJsonOrNull = Annotated[FreeJson, _NullAsEmpty(dict),
                           WithJsonSchema({"anyOf": [{WIRE_MARKER: "JsonObject"},
                                                     {"type": "null"}]})]


# How a request was served, for pricing (docs/pricing.md, rules 10-12). The service tiers
# are LiteLLM's (``fast`` is its alias of ``priority``) plus ``batch``, the batch API;
# absent means the standard tier.
ServiceTier = Literal["priority", "flex", "batch", "balanced", "fast", "ultrafast"]
SERVICE_TIERS: tuple[str, ...] = get_args(ServiceTier)
# OpenAI's data-residency regions and its FedRAMP endpoint.
DataResidency = Literal["us", "eu", "fedramp"]
DATA_RESIDENCIES: tuple[str, ...] = get_args(DataResidency)
