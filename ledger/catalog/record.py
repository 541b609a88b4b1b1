"""The typed model record built from one entry of BerriAI's price map.

The price map is maintained by many hands and its shapes drift (nested dicts where a number
was expected, descriptive strings in ``sample_spec``, new keys every week). A catalog import
must never lose an entry over that, so ``ModelRecord.from_berriai`` never raises: the whole
entry is kept in ``raw`` and a typed field is only set when its value has the right shape;
the keys it had to leave untyped are listed in ``ignored_fields``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "COMMON_FEATURES",
    "TYPED_PRICE_FIELDS",
    "ModelRecord",
    "PriceTier",
    "to_price",
]

# Prices that get their own typed attribute. The attribute name is the BerriAI key, so a
# reader of the price file and a reader of this class speak the same words. Every other
# price-like key is still available, exactly, in ``ModelRecord.prices``.
TYPED_PRICE_FIELDS: tuple[str, ...] = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "input_cost_per_token_above_128k_tokens",
    "output_cost_per_token_above_128k_tokens",
    "input_cost_per_token_above_200k_tokens",
    "output_cost_per_token_above_200k_tokens",
    "cache_read_input_token_cost_above_200k_tokens",
    "cache_creation_input_token_cost_above_200k_tokens",
    "input_cost_per_token_above_272k_tokens",
    "output_cost_per_token_above_272k_tokens",
    "cache_read_input_token_cost_above_272k_tokens",
    "cache_creation_input_token_cost_above_272k_tokens",
    "output_cost_per_reasoning_token",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
    "cache_read_input_audio_token_cost",
    "input_cost_per_image",
    "input_cost_per_image_token",
    "output_cost_per_image",
    "output_cost_per_image_token",
    "input_cost_per_second",
    "output_cost_per_second",
    "input_cost_per_character",
    "output_cost_per_character",
    "input_cost_per_token_batches",
    "output_cost_per_token_batches",
    "cache_read_input_token_cost_batches",
    "input_cost_per_token_priority",
    "output_cost_per_token_priority",
    "cache_read_input_token_cost_priority",
    "input_cost_per_token_flex",
    "output_cost_per_token_flex",
    "cache_read_input_token_cost_flex",
    "input_cost_per_query",
    "input_cost_per_request",
)

# Feature flags common enough to deserve a typed attribute; all of them (and every rarer
# supports_* flag that is true) also appear in ``ModelRecord.features``.
COMMON_FEATURES: tuple[str, ...] = (
    "supports_function_calling",
    "supports_parallel_function_calling",
    "supports_tool_choice",
    "supports_vision",
    "supports_audio_input",
    "supports_audio_output",
    "supports_pdf_input",
    "supports_prompt_caching",
    "supports_reasoning",
    "supports_response_schema",
    "supports_system_messages",
    "supports_web_search",
    "supports_computer_use",
    "supports_video_input",
)

_INT_FIELDS: tuple[str, ...] = ("max_input_tokens", "max_output_tokens", "max_tokens")
_STR_FIELDS: dict[str, str] = {
    "litellm_provider": "provider",
    "mode": "mode",
    "alias_of": "alias_of",
}
# A key is read as a price when its name says so. Keys like ``search_context_cost_per_query``
# (a dict of sizes) match too; they land in ignored_fields because they are not one number.
_PRICE_KEY = re.compile(r"(^|_)cost(_|$)")


def to_price(value: object) -> Decimal | None:
    """Convert a JSON value to an exact, finite, non-negative Decimal, or None.

    Floats go through ``repr`` so ``1e-06`` becomes ``Decimal('0.000001')`` and not the
    binary expansion ``Decimal(1e-06)`` would give. Numeric strings are accepted because
    LiteLLM accepts them (``"3e-7"`` in YAML configs); booleans are not numbers here even
    though Python says they are ints.
    """
    if isinstance(value, bool):
        return None
    result: Decimal
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    if not result.is_finite() or result < 0:
        return None
    return result


def _to_int(value: object) -> int | None:
    """Whole, non-negative counts only: ``128000`` or ``128000.0``, not ``"128k"``."""
    price = to_price(value)
    if price is None or price != price.to_integral_value():
        return None
    return int(price)


def _to_date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


class PriceTier(BaseModel):
    """One row of a ``tiered_pricing`` table: prices that apply when the prompt size falls
    in ``(range_start, range_end]`` (Dashscope-style all-or-nothing tiers)."""

    model_config = ConfigDict(frozen=True)

    range_start: Decimal
    range_end: Decimal
    prices: dict[str, Decimal]

    @classmethod
    def parse(cls, value: object) -> PriceTier | None:
        if not isinstance(value, Mapping):
            return None
        bounds = value.get("range")
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            return None
        start, end = to_price(bounds[0]), to_price(bounds[1])
        if start is None or end is None:
            return None
        prices = {
            str(k): p for k, v in value.items() if k != "range" and (p := to_price(v)) is not None
        }
        return cls(range_start=start, range_end=end, prices=prices)


class ModelRecord(BaseModel):
    """One model of the catalog, typed where the price map is well formed, raw everywhere."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: str | None = None
    mode: str | None = None
    alias_of: str | None = None

    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    cache_read_input_token_cost: Decimal | None = None
    cache_creation_input_token_cost: Decimal | None = None
    cache_creation_input_token_cost_above_1hr: Decimal | None = None
    input_cost_per_token_above_128k_tokens: Decimal | None = None
    output_cost_per_token_above_128k_tokens: Decimal | None = None
    input_cost_per_token_above_200k_tokens: Decimal | None = None
    output_cost_per_token_above_200k_tokens: Decimal | None = None
    cache_read_input_token_cost_above_200k_tokens: Decimal | None = None
    cache_creation_input_token_cost_above_200k_tokens: Decimal | None = None
    input_cost_per_token_above_272k_tokens: Decimal | None = None
    output_cost_per_token_above_272k_tokens: Decimal | None = None
    cache_read_input_token_cost_above_272k_tokens: Decimal | None = None
    cache_creation_input_token_cost_above_272k_tokens: Decimal | None = None
    output_cost_per_reasoning_token: Decimal | None = None
    input_cost_per_audio_token: Decimal | None = None
    output_cost_per_audio_token: Decimal | None = None
    cache_read_input_audio_token_cost: Decimal | None = None
    input_cost_per_image: Decimal | None = None
    input_cost_per_image_token: Decimal | None = None
    output_cost_per_image: Decimal | None = None
    output_cost_per_image_token: Decimal | None = None
    input_cost_per_second: Decimal | None = None
    output_cost_per_second: Decimal | None = None
    input_cost_per_character: Decimal | None = None
    output_cost_per_character: Decimal | None = None
    input_cost_per_token_batches: Decimal | None = None
    output_cost_per_token_batches: Decimal | None = None
    cache_read_input_token_cost_batches: Decimal | None = None
    input_cost_per_token_priority: Decimal | None = None
    output_cost_per_token_priority: Decimal | None = None
    cache_read_input_token_cost_priority: Decimal | None = None
    input_cost_per_token_flex: Decimal | None = None
    output_cost_per_token_flex: Decimal | None = None
    cache_read_input_token_cost_flex: Decimal | None = None
    input_cost_per_query: Decimal | None = None
    input_cost_per_request: Decimal | None = None

    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_tokens: int | None = None
    deprecation_date: date | None = None

    # None means the entry does not say; False means it says no.
    supports_function_calling: bool | None = None
    supports_parallel_function_calling: bool | None = None
    supports_tool_choice: bool | None = None
    supports_vision: bool | None = None
    supports_audio_input: bool | None = None
    supports_audio_output: bool | None = None
    supports_pdf_input: bool | None = None
    supports_prompt_caching: bool | None = None
    supports_reasoning: bool | None = None
    supports_response_schema: bool | None = None
    supports_system_messages: bool | None = None
    supports_web_search: bool | None = None
    supports_computer_use: bool | None = None
    supports_video_input: bool | None = None
    features: frozenset[str] = frozenset()

    # Every top-level price that is one finite number, exactly, keyed
    # by its BerriAI name: the pricing engine reads thresholds such as ``_above_100k_tokens``
    # from here, so a new tier in the file needs no code change.
    prices: dict[str, Decimal] = {}
    tiered_pricing: tuple[PriceTier, ...] = ()
    has_off_peak_pricing: bool = False

    ignored_fields: tuple[str, ...] = ()
    raw: dict[str, Any] = {}

    @classmethod
    def from_berriai(cls, name: str, entry: Mapping[str, Any] | object) -> ModelRecord:
        """Build a record from one price-map entry; never raises on the entry's shape.

        A non-object entry is kept as ``raw = {"_unparsed": entry}`` so nothing is lost.
        """
        if not isinstance(entry, Mapping):
            return cls(name=str(name), raw={"_unparsed": entry}, ignored_fields=("_unparsed",))
        raw: dict[str, Any] = {str(k): v for k, v in entry.items()}
        fields: dict[str, Any] = {}
        ignored: list[str] = []
        prices: dict[str, Decimal] = {}
        features: set[str] = set()

        for key, value in raw.items():
            if value is None:
                continue  # an explicit null says "not priced", same as absent
            if key in _STR_FIELDS:
                if isinstance(value, str) and value:
                    fields[_STR_FIELDS[key]] = value
                else:
                    ignored.append(key)
            elif key in _INT_FIELDS:
                count = _to_int(value)
                if count is None:
                    ignored.append(key)
                else:
                    fields[key] = count
            elif key == "deprecation_date":
                when = _to_date(value)
                if when is None:
                    ignored.append(key)
                else:
                    fields[key] = when
            elif key.startswith("supports_"):
                if not isinstance(value, bool):
                    ignored.append(key)
                    continue
                if value:
                    features.add(key)
                if key in COMMON_FEATURES:
                    fields[key] = value
            elif key == "tiered_pricing":
                tiers = tuple(PriceTier.parse(t) for t in value) if isinstance(value, list) else ()
                if tiers and all(t is not None for t in tiers):
                    fields[key] = tuple(t for t in tiers if t is not None)
                else:
                    ignored.append(key)
            elif key == "off_peak_pricing":
                fields["has_off_peak_pricing"] = isinstance(value, Mapping)
                if not isinstance(value, Mapping):
                    ignored.append(key)
            elif _PRICE_KEY.search(key):
                price = to_price(value)
                if price is None:
                    ignored.append(key)
                else:
                    prices[key] = price
                    if key in TYPED_PRICE_FIELDS:
                        fields[key] = price

        return cls(
            name=str(name),
            **fields,
            features=frozenset(features),
            prices=prices,
            ignored_fields=tuple(ignored),
            raw=raw,
        )

    def price(self, key: str) -> Decimal | None:
        """The exact price under a BerriAI key, typed or not; None when absent or malformed."""
        return self.prices.get(key)

    def supports(self, feature: str) -> bool:
        """``supports("vision")`` and ``supports("supports_vision")`` both work."""
        flag = feature if feature.startswith("supports_") else f"supports_{feature}"
        return flag in self.features
