"""The field types of the event contract, with the bounds every field is held to.

Whatever a gateway in any language sends either fits the PostgreSQL columns and the month
arithmetic, or is refused while decoding, naming the field (and so becomes a dead letter) --
never an exception half-way through a projector batch. docs/events.md lists the bounds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, Field, PlainSerializer, StringConstraints

from ledger.keys import KEY_HASH_PATTERN

MAX_TEXT_LENGTH = 512  # names, ids, models, sources, codes
MAX_COUNT = 10**9  # tokens, images, characters, latency_ms of one event: monthly sums fit bigint
MAX_USD = Decimal(10**9)  # one event's cost or one key's budget
MAX_SECONDS = Decimal(10**9)
MAX_DECIMAL_PLACES = 30  # exact per-token prices times counts need ~20
# occurred_at / valid_from / expires_at: a fixed window (never "now"), so a live projector
# and a rebuild years later accept exactly the same events.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# No C0 control character (NUL included: PostgreSQL text cannot hold it) and no DEL.
PLAIN_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# Free text (metadata values) may carry tab, newline and carriage return, nothing else.
FREE_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _in_window(value: datetime) -> datetime:
    try:
        inside = EARLIEST <= value < LATEST
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC equivalent
        inside = False
    if not inside:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


NonEmptyStr = Annotated[str, StringConstraints(
    min_length=1, max_length=MAX_TEXT_LENGTH, pattern=PLAIN_TEXT_PATTERN)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Money = Annotated[Decimal, Field(ge=0, le=MAX_USD, decimal_places=MAX_DECIMAL_PLACES)]
Seconds = Annotated[Decimal, Field(ge=0, le=MAX_SECONDS, decimal_places=MAX_DECIMAL_PLACES)]
Moment = Annotated[AwareDatetime, AfterValidator(_in_window)]

MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
MetadataKey = Annotated[str, StringConstraints(
    min_length=1, max_length=MAX_METADATA_KEY_LENGTH, pattern=PLAIN_TEXT_PATTERN)]
MetadataValue = Annotated[str, StringConstraints(
    max_length=MAX_METADATA_VALUE_LENGTH, pattern=FREE_TEXT_PATTERN)]
# Bounded so a misbehaving gateway cannot turn every usage row into an unbounded blob.
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_ENTRIES)]
KeyHash = Annotated[str, StringConstraints(pattern=KEY_HASH_PATTERN.pattern)]


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


def _no_nul(value: Any) -> Any:
    """jsonb cannot hold U+0000 in any string, key or value, at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


FreeJson = Annotated[
    dict[str, Any],
    AfterValidator(_no_nul),
    PlainSerializer(_decimals_as_json_numbers, when_used="json"),
]


# How a request was served, for pricing (docs/pricing.md, rules 10-12). The service tiers
# are LiteLLM's (``fast`` is its alias of ``priority``) plus ``batch``, the batch API;
# absent means the standard tier.
ServiceTier = Literal["priority", "flex", "batch", "balanced", "fast", "ultrafast"]
SERVICE_TIERS: tuple[str, ...] = get_args(ServiceTier)
# OpenAI's data-residency regions and its FedRAMP endpoint.
DataResidency = Literal["us", "eu", "fedramp"]
DATA_RESIDENCIES: tuple[str, ...] = get_args(DataResidency)
