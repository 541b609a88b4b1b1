"""Exact cost of one request, from a catalog ``ModelRecord``, a ``Usage`` and how and when
the request was served (service tier, region, ``occurred_at``).

The rules follow LiteLLM's ``cost_per_token`` (litellm 1.110.2) so that the ledger and the
gateway agree to the cent and beyond; ``docs/pricing.md`` states each rule with a worked
example, and ``tests/ledger/data/litellm_cost_cases.json`` replays LiteLLM's own numbers
against this module. Which rate applies lives in ``pricing_rates`` (long-context and service
tiers), ``pricing_time`` (off-peak windows), ``pricing_batch`` and ``pricing_region``
(uplifts); this module bills the components. Two deliberate differences from LiteLLM:

* arithmetic is Decimal and exact (an ``Inexact`` trap proves no rounding ever happens), and
* a unit that was used but has no price is reported in ``CostBreakdown.unpriced`` instead
  of silently counting zero.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, Inexact, localcontext
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from ledger.catalog.record import ModelRecord
from ledger.exceptions import UnpricedUsageError
from ledger.fields import DataResidency, ServiceTier
from ledger.pricing_batch import batch_rates
from ledger.pricing_rates import TIER_SUFFIXES, Rate, Rates, get, resolve_rates
from ledger.pricing_region import uplifts
from ledger.pricing_time import off_peak_block

__all__ = [
    "CostBreakdown",
    "CostLine",
    "UnpricedUsageError",
    "Usage",
    "calculate_cost",
    "price",
]

_ZERO = Decimal(0)
# LiteLLM's cost paths for these providers take no service tier: their requests are priced
# at standard rates whatever the tier, and so are they here (with a note).
_TIERLESS_PROVIDERS = frozenset({
    "deepseek", "tencent", "perplexity", "xai", "fireworks_ai", "lemonade", "dashscope",
    "qwencloud", "qwen_ai_platform",
})  # fmt: skip


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
    row that applied; ``service_tier`` the service tier whose prices applied (None:
    standard); ``off_peak`` whether off-peak rates applied at ``at``; uplifts are lines of
    their own (``..._uplift``); ``notes`` says where a rule changed what was billed.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    lines: tuple[CostLine, ...]
    total: Decimal
    unpriced: tuple[str, ...] = ()
    tier: str | None = None
    service_tier: str | None = None
    off_peak: bool = False
    at: datetime | None = None
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


def _rates(
    model: ModelRecord,
    usage: Usage,
    at: datetime | None,
    service_tier: ServiceTier | None,
    notes: list[str],
) -> tuple[Rates, str | None, bool]:
    """The rates to bill with, the service tier whose prices apply, whether off-peak."""
    block = off_peak_block(model.raw, at)
    if model.has_off_peak_pricing and at is None:
        notes.append("off_peak_pricing not applied: no time given, standard rates used")
    if service_tier == "batch":
        batch = batch_rates(model, usage.prompt_tokens)
        if batch.halved:
            notes.append("no batch input price: the standard rates halved, as LiteLLM does")
        if block is not None:
            notes.append("off_peak_pricing does not apply to batch requests")
        return batch.rates, "batch", False
    suffix = ""
    applied: str | None = None
    if service_tier is not None:
        if model.provider in _TIERLESS_PROVIDERS:
            notes.append(f"service tier {service_tier} not applied: LiteLLM prices "
                         f"{model.provider} models at standard rates")  # fmt: skip
        else:
            suffix = TIER_SUFFIXES[service_tier]
            if any(key.endswith(suffix) for key in model.prices):
                applied = service_tier
            else:
                notes.append(f"no {service_tier} prices: standard rates used")
    rates = resolve_rates(model, usage.prompt_tokens, suffix=suffix, off_peak=block)
    return rates, applied, block is not None


def price(
    model: ModelRecord,
    usage: Usage,
    *,
    at: datetime | None = None,
    service_tier: ServiceTier | None = None,
    data_residency: DataResidency | None = None,
    vertex_location: str | None = None,
    inference_geo: str | None = None,
) -> CostBreakdown:
    """Price ``usage`` on ``model``; never raises for missing prices (see ``unpriced``).

    ``at`` (timezone-aware; the event's ``occurred_at``) decides off-peak prices;
    ``service_tier`` (None: standard) picks the tier's prices or the batch rules;
    ``data_residency``, ``vertex_location`` and ``inference_geo`` apply the regional
    uplifts the model lists.
    """
    notes: list[str] = []
    rates, applied_tier, off_peak = _rates(model, usage, at, service_tier, notes)
    batch = service_tier == "batch"
    lines: list[CostLine] = []
    unpriced: list[str] = []

    def bill(
        component: str, side: Literal["input", "output"], quantity: int | Decimal, rate: Rate
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

    # A batch request has token prices only: other units are reported unpriced.
    char_rate = None if batch else get(model.prices, "input_cost_per_character")
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
        bill("images", "input", usage.images,
             None if batch else get(model.prices, "input_cost_per_image"))  # fmt: skip
        bill("input_seconds", "input", usage.input_seconds,
             None if batch else get(model.prices, "input_cost_per_second"))  # fmt: skip

        text_out = usage.completion_tokens - usage.reasoning_tokens - usage.audio_output_tokens
        bill("text_output", "output", text_out, rates.output)
        bill("reasoning_output", "output", usage.reasoning_tokens, rates.reasoning)
        bill("audio_output", "output", usage.audio_output_tokens, rates.audio_out)
        bill("output_seconds", "output", usage.output_seconds,
             None if batch else get(model.prices, "output_cost_per_second"))  # fmt: skip

        applied = uplifts(model, data_residency=data_residency, vertex_location=vertex_location,
                          inference_geo=inference_geo, batch=batch)  # fmt: skip
        for uplift in applied:
            # An uplift multiplies everything billed so far, one line per side.
            for side in ("input", "output"):
                subtotal = sum((ln.amount for ln in lines if ln.side == side), _ZERO)
                if subtotal:
                    extra = uplift.multiplier - 1
                    lines.append(CostLine(component=uplift.component, side=side,
                                          quantity=subtotal, unit_price=extra,
                                          price_key=uplift.price_key,
                                          amount=subtotal * extra))  # fmt: skip
        total = sum((line.amount for line in lines), _ZERO)

    asked = {"data_residency": data_residency, "vertex_location": vertex_location,
             "inference_geo": inference_geo}  # fmt: skip
    for name, value in asked.items():
        if value is not None and not any(u.component.startswith(name) for u in applied):
            why = "batch requests" if batch and name == "inference_geo" else "this model"
            notes.append(f"{name} {value}: no uplift for {why}")
    return CostBreakdown(
        model=model.name,
        lines=tuple(lines),
        total=total,
        unpriced=tuple(unpriced),
        tier=rates.tier,
        service_tier=applied_tier,
        off_peak=off_peak,
        at=at,
        notes=tuple(notes),
    )


def calculate_cost(model: ModelRecord, usage: Usage, **conditions: Any) -> Decimal:
    """Total USD cost of ``usage`` on ``model``, exact; ``conditions`` are ``price``'s
    keyword arguments (``at``, ``service_tier``, ``data_residency``...).

    Raises ``UnpricedUsageError`` when a unit was used that the model has no price for;
    use ``price`` to get the partial breakdown instead.
    """
    breakdown = price(model, usage, **conditions)
    if breakdown.unpriced:
        raise UnpricedUsageError(breakdown)
    return breakdown.total
