"""Exact cost of one request, from a catalog ``ModelRecord`` and a ``Usage``.

The rules follow LiteLLM's ``generic_cost_per_token`` (litellm 1.110.2) so that the ledger
and the gateway agree to the cent and beyond; ``docs/pricing.md`` states each rule with a
worked example, and ``tests/ledger/data/litellm_cost_cases.json`` replays LiteLLM's own
numbers against this module. Two deliberate differences from LiteLLM:

* arithmetic is Decimal and exact (an ``Inexact`` trap proves no rounding ever happens), and
* a unit that was used but has no price is reported in ``CostBreakdown.unpriced`` instead
  of silently counting zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from ledger.catalog.record import ModelRecord, PriceTier
from ledger.exceptions import LedgerError

__all__ = [
    "CostBreakdown",
    "CostLine",
    "UnpricedUsageError",
    "Usage",
    "calculate_cost",
    "price",
]

_ZERO = Decimal(0)
_INPUT = "input_cost_per_token"
_OUTPUT = "output_cost_per_token"
_CACHE_READ = "cache_read_input_token_cost"
_CACHE_WRITE = "cache_creation_input_token_cost"
_CACHE_WRITE_1H = "cache_creation_input_token_cost_above_1hr"
_AUDIO_IN = "input_cost_per_audio_token"
_AUDIO_OUT = "output_cost_per_audio_token"
_REASONING = "output_cost_per_reasoning_token"
_TIER_PREFIXES = tuple(f"{p}_above_" for p in (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE))
# Threshold keys for a service tier or the batch API are not standard prices; LiteLLM skips
# them when looking for the long-context tier of a standard request, and so do we.
_NON_STANDARD_SUFFIXES = (
    "_ultrafast", "_priority", "_balanced", "_flex", "_fast", "_auto", "_batches",
)  # fmt: skip
# xAI bills the higher tier once the prompt *reaches* the threshold; everyone else above it.
_INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})
# LiteLLM's FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO: Fireworks bills cache hits at half
# the input rate when the price map lists no cache-read price.
_FIREWORKS_CACHE_READ_RATIO = Decimal("0.5")


class UnpricedUsageError(LedgerError, ValueError):
    """The usage has units (tokens, images, seconds...) the model's prices do not cover.

    Not retriable: the same catalog gives the same answer. ``breakdown`` holds everything
    that *could* be priced, so a caller may still record a partial cost knowingly.
    """

    def __init__(self, breakdown: CostBreakdown) -> None:
        super().__init__(
            f"model {breakdown.model!r} has no price for: {', '.join(breakdown.unpriced)}"
        )
        self.breakdown = breakdown
        self.unpriced = breakdown.unpriced


class Usage(BaseModel):
    """What one request consumed. Sub-counts are PART OF their totals, never in addition:

    ``cache_read_input_tokens + cache_creation_input_tokens + audio_input_tokens`` are
    included in ``prompt_tokens``; ``cache_creation_1h_input_tokens`` is included in
    ``cache_creation_input_tokens``; ``reasoning_tokens + audio_output_tokens`` are included
    in ``completion_tokens``. A usage that breaks this is rejected rather than guessed at.
    ``characters`` counts input characters, for models priced per character.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cache_read_input_tokens: NonNegativeInt = 0
    cache_creation_input_tokens: NonNegativeInt = 0
    cache_creation_1h_input_tokens: NonNegativeInt = 0
    reasoning_tokens: NonNegativeInt = 0
    audio_input_tokens: NonNegativeInt = 0
    audio_output_tokens: NonNegativeInt = 0
    images: NonNegativeInt = 0
    # Bounded so quantity x price always fits the exact decimal context used by ``price``.
    input_seconds: Decimal = Field(default=_ZERO, ge=0, max_digits=40)
    output_seconds: Decimal = Field(default=_ZERO, ge=0, max_digits=40)
    characters: NonNegativeInt = 0

    @field_validator("input_seconds", "output_seconds", mode="before")
    @classmethod
    def _no_float_seconds(cls, value: Any) -> Any:
        # A float here would already carry binary noise into a money calculation.
        if isinstance(value, float):
            raise ValueError("seconds must be an int, str or Decimal, not float")
        return value

    @model_validator(mode="after")
    def _parts_within_totals(self) -> Usage:
        prompt_parts = (
            self.cache_read_input_tokens
            + self.cache_creation_input_tokens
            + self.audio_input_tokens
        )
        if prompt_parts > self.prompt_tokens:
            raise ValueError(
                "cache_read + cache_creation + audio_input tokens are part of prompt_tokens "
                f"and cannot exceed it ({prompt_parts} > {self.prompt_tokens})"
            )
        if self.cache_creation_1h_input_tokens > self.cache_creation_input_tokens:
            raise ValueError("cache_creation_1h_input_tokens exceeds cache_creation_input_tokens")
        completion_parts = self.reasoning_tokens + self.audio_output_tokens
        if completion_parts > self.completion_tokens:
            raise ValueError(
                "reasoning + audio_output tokens are part of completion_tokens and cannot "
                f"exceed it ({completion_parts} > {self.completion_tokens})"
            )
        return self


class CostLine(BaseModel):
    """One billed component: ``amount = quantity * unit_price``, exactly.

    ``price_key`` names the price-map key the rate came from (``input_cost_per_token`` when
    audio falls back to the text rate, ``..._above_200k_tokens`` in a long-context tier), so
    every cent can be traced back to the catalog.
    """

    model_config = ConfigDict(frozen=True)

    component: str
    side: Literal["input", "output"]
    quantity: Decimal
    unit_price: Decimal | None
    price_key: str | None
    amount: Decimal


class CostBreakdown(BaseModel):
    """The priced request: ``total`` is the exact sum of ``lines``.

    ``unpriced`` names components that were used but have no price (their lines carry a zero
    amount and no unit price); ``tier`` names the long-context tier or ``tiered_pricing``
    row that applied; ``notes`` says where a rule changed what was billed.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    lines: tuple[CostLine, ...]
    total: Decimal
    unpriced: tuple[str, ...] = ()
    tier: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def input_cost(self) -> Decimal:
        return sum((line.amount for line in self.lines if line.side == "input"), _ZERO)

    @property
    def output_cost(self) -> Decimal:
        return sum((line.amount for line in self.lines if line.side == "output"), _ZERO)

    @property
    def complete(self) -> bool:
        return not self.unpriced

    def amount(self, component: str) -> Decimal:
        """The amount of one component, zero when it was not billed."""
        return sum((ln.amount for ln in self.lines if ln.component == component), _ZERO)


_Rate = tuple[Decimal, str] | None  # (price, key it came from)


class _Rates(BaseModel):
    model_config = ConfigDict(frozen=True)

    input: _Rate
    output: _Rate
    cache_read: _Rate
    cache_write: _Rate
    cache_write_1h: _Rate
    reasoning: _Rate
    audio_in: _Rate
    audio_out: _Rate
    tier: str | None


def _parse_threshold(text: str) -> Decimal | None:
    """``"200k"`` -> 200000, ``"128"`` -> 128, as LiteLLM's ``_parse_token_threshold``."""
    try:
        number = Decimal(text.replace("k", ""))
    except InvalidOperation:
        return None
    return number * 1000 if "k" in text else number


def _threshold_of_key(key: str) -> str:
    return key.rsplit("_above_", 1)[1].split("_tokens")[0]


def _crossed(prompt_tokens: int, threshold: Decimal, inclusive: bool) -> bool:
    return prompt_tokens > threshold or (inclusive and prompt_tokens == threshold)


def _crossed_thresholds(prices: Mapping[str, Decimal], prompt: int, inclusive: bool) -> list[str]:
    """Threshold labels ("128k", "200k"...) the prompt crossed, lowest first."""
    labels: dict[str, Decimal] = {}
    for key in prices:
        if (
            key.startswith(_TIER_PREFIXES)
            and "_tokens" in key
            and not key.endswith(_NON_STANDARD_SUFFIXES)
        ):
            label = _threshold_of_key(key)
            value = _parse_threshold(label)
            if value is not None and _crossed(prompt, value, inclusive):
                labels[label] = value
    return sorted(labels, key=labels.__getitem__)


def _get(prices: Mapping[str, Decimal], key: str) -> _Rate:
    value = prices.get(key)
    return None if value is None else (value, key)


def _select_price_tier(model: ModelRecord, prompt_tokens: int) -> PriceTier | None:
    """Dashscope-style ``tiered_pricing``: the tier whose ``(start, end]`` holds the prompt;
    above every range the last tier applies. The tier must carry an input price."""
    if not model.tiered_pricing or prompt_tokens <= 0:
        return None
    ordered = sorted(model.tiered_pricing, key=lambda t: t.range_start)
    tier = next((t for t in ordered if t.range_start < prompt_tokens <= t.range_end), ordered[-1])
    return tier if _INPUT in tier.prices else None


def _tiered_table_rates(model: ModelRecord, tier: PriceTier, prompt_tokens: int) -> _Rates:
    label = f"tiered_pricing({tier.range_start}, {tier.range_end}]"
    p = tier.prices
    inp = (p[_INPUT], f"{label}.{_INPUT}")

    def own_or(key: str, fallback: _Rate) -> _Rate:
        return (p[key], f"{label}.{key}") if key in p else fallback

    out = own_or(_OUTPUT, _get(model.prices, _OUTPUT))
    write = own_or(_CACHE_WRITE, inp)
    reasoning = own_or(_REASONING, own_or(_OUTPUT, None)) or _get(model.prices, _REASONING) or out
    return _Rates(
        input=inp,
        output=out,
        cache_read=own_or(_CACHE_READ, inp),
        cache_write=write,
        cache_write_1h=own_or(_CACHE_WRITE_1H, write),
        reasoning=reasoning,
        audio_in=_audio_in_rate(
            model.prices, prompt_tokens, model.provider in _INCLUSIVE_THRESHOLD_PROVIDERS, inp
        ),
        audio_out=_get(model.prices, _AUDIO_OUT) or out,
        tier=label,
    )


def _audio_in_rate(
    prices: Mapping[str, Decimal], prompt: int, inclusive: bool, inp: _Rate
) -> _Rate:
    """The audio input rate, long-context tier included; the text input rate if none."""
    prefix = f"{_AUDIO_IN}_above_"
    best: tuple[Decimal, str] | None = None
    for key in prices:
        if key.startswith(prefix) and key.endswith("_tokens"):
            threshold = _parse_threshold(_threshold_of_key(key))
            if (
                threshold is not None
                and _crossed(prompt, threshold, inclusive)
                and (best is None or threshold > best[0])
            ):
                best = (threshold, key)
    if best is not None:
        return _get(prices, best[1])
    return _get(prices, _AUDIO_IN) or inp


def _resolve_rates(model: ModelRecord, prompt_tokens: int) -> _Rates:
    table_tier = _select_price_tier(model, prompt_tokens)
    if table_tier is not None:
        return _tiered_table_rates(model, table_tier, prompt_tokens)

    prices: dict[str, Decimal] = dict(model.prices)
    if model.provider == "fireworks_ai" and _CACHE_READ not in prices and _INPUT in prices:
        prices[_CACHE_READ] = prices[_INPUT] * _FIREWORKS_CACHE_READ_RATIO
    inclusive = model.provider in _INCLUSIVE_THRESHOLD_PROVIDERS

    inp = _get(prices, _INPUT)
    out = _get(prices, _OUTPUT)
    if (out is None or out[0] == 0) and "output_cost_per_image_token" in prices:
        # Image-generation models price their output only per image token.
        out = _get(prices, "output_cost_per_image_token")
    read = _get(prices, _CACHE_READ)
    write = _get(prices, _CACHE_WRITE)
    write_1h_key = _CACHE_WRITE_1H

    # Long-context tiers: every crossed threshold overrides each rate it prices, so the
    # highest crossed threshold that prices a component wins for that component; rates the
    # tier does not list keep the standard price.
    crossed = _crossed_thresholds(prices, prompt_tokens, inclusive)
    for label in crossed:
        inp = _get(prices, f"{_INPUT}_above_{label}_tokens") or inp
        out = _get(prices, f"{_OUTPUT}_above_{label}_tokens") or out
        read = _get(prices, f"{_CACHE_READ}_above_{label}_tokens") or read
        write = _get(prices, f"{_CACHE_WRITE}_above_{label}_tokens") or write
        tiered_1h = f"{_CACHE_WRITE_1H}_above_{label}_tokens"
        if tiered_1h in prices:
            write_1h_key = tiered_1h

    # No cache price published means cached tokens are ordinary input tokens.
    read = read or inp
    write = write or inp
    return _Rates(
        input=inp,
        output=out,
        cache_read=read,
        cache_write=write,
        cache_write_1h=_get(prices, write_1h_key) or write,
        reasoning=_get(prices, _REASONING) or out,
        audio_in=_audio_in_rate(prices, prompt_tokens, inclusive, inp),
        audio_out=_get(prices, _AUDIO_OUT) or out,
        tier=f"above_{crossed[-1]}_tokens" if crossed else None,
    )


def price(model: ModelRecord, usage: Usage) -> CostBreakdown:
    """Price ``usage`` on ``model``; never raises for missing prices (see ``unpriced``)."""
    rates = _resolve_rates(model, usage.prompt_tokens)
    lines: list[CostLine] = []
    unpriced: list[str] = []
    notes: list[str] = []
    if model.has_off_peak_pricing:
        notes.append("off_peak_pricing not applied: standard rates used")

    def bill(
        component: str, side: Literal["input", "output"], quantity: int | Decimal, rate: _Rate
    ) -> None:
        if quantity <= 0:
            return
        if rate is None:
            unpriced.append(component)
            lines.append(
                CostLine(
                    component=component, side=side, quantity=Decimal(quantity),
                    unit_price=None, price_key=None, amount=_ZERO,
                )
            )  # fmt: skip
            return
        lines.append(
            CostLine(
                component=component, side=side, quantity=Decimal(quantity),
                unit_price=rate[0], price_key=rate[1], amount=rate[0] * quantity,
            )
        )  # fmt: skip

    char_rate = _get(model.prices, "input_cost_per_character")
    with localcontext() as ctx:
        # Counts (<= 40 digits) times catalog prices fit easily in 200 digits; the trap
        # proves no amount or sum was ever rounded.
        ctx.prec = 200
        ctx.traps[Inexact] = True
        text_in = (
            usage.prompt_tokens
            - usage.cache_read_input_tokens
            - usage.cache_creation_input_tokens
            - usage.audio_input_tokens
        )
        if usage.characters > 0 and char_rate is not None:
            notes.append("billed per input character instead of per text input token")
        else:
            bill("text_input", "input", text_in, rates.input)
        bill("cache_read_input", "input", usage.cache_read_input_tokens, rates.cache_read)
        write_1h = usage.cache_creation_1h_input_tokens
        bill("cache_creation_input", "input",
             usage.cache_creation_input_tokens - write_1h, rates.cache_write)  # fmt: skip
        bill("cache_creation_1h_input", "input", write_1h, rates.cache_write_1h)
        bill("audio_input", "input", usage.audio_input_tokens, rates.audio_in)
        bill("characters", "input", usage.characters, char_rate)
        bill("images", "input", usage.images, _get(model.prices, "input_cost_per_image"))
        bill("input_seconds", "input", usage.input_seconds,
             _get(model.prices, "input_cost_per_second"))  # fmt: skip

        text_out = usage.completion_tokens - usage.reasoning_tokens - usage.audio_output_tokens
        bill("text_output", "output", text_out, rates.output)
        bill("reasoning_output", "output", usage.reasoning_tokens, rates.reasoning)
        bill("audio_output", "output", usage.audio_output_tokens, rates.audio_out)
        bill("output_seconds", "output", usage.output_seconds,
             _get(model.prices, "output_cost_per_second"))  # fmt: skip
        total = sum((line.amount for line in lines), _ZERO)

    return CostBreakdown(
        model=model.name,
        lines=tuple(lines),
        total=total,
        unpriced=tuple(unpriced),
        tier=rates.tier,
        notes=tuple(notes),
    )


def calculate_cost(model: ModelRecord, usage: Usage) -> Decimal:
    """Total USD cost of ``usage`` on ``model``, exact.

    Raises ``UnpricedUsageError`` when a unit was used that the model has no price for;
    use ``price`` to get the partial breakdown instead.
    """
    breakdown = price(model, usage)
    if breakdown.unpriced:
        raise UnpricedUsageError(breakdown)
    return breakdown.total
