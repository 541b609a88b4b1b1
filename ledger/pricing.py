"""Exact cost of one request, from a catalog ``ModelRecord``, a ``Usage`` and how and when
the request was served (service tier, region, ``occurred_at``).

The rules follow LiteLLM's ``cost_per_token`` (litellm 1.110.2) so that the ledger and the
gateway agree to the cent and beyond; ``docs/pricing.md`` states each rule with a worked
example, and ``tests/ledger/data/litellm_cost_cases.json`` replays LiteLLM's own numbers
against this module. Which rate applies lives in ``pricing_rates`` (long-context and service
tiers), ``pricing_time`` (off-peak windows), ``pricing_batch`` and ``pricing_region``
(uplifts); ``pricing_plan`` gathers them per request and bills the components; this module
holds the usage, the breakdown and ``price``. Two deliberate differences from LiteLLM:

* arithmetic is Decimal and exact (an ``Inexact`` trap proves no rounding ever happens), and
* a unit that was used but has no price is reported in ``CostBreakdown.unpriced`` instead
  of silently counting zero.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from ledger.catalog.record import ModelRecord
from ledger.exceptions import UnpricedUsageError
from ledger.fields import DataResidency, ServiceTier
from ledger.pricing_plan import Counts, bill, build_plan
from ledger.pricing_time import off_peak_block

__all__ = [
    "CostBreakdown",
    "CostLine",
    "UnpricedUsageError",
    "Usage",
    "calculate_cost",
    "checked_counts",
    "price",
    "usage_counts",
]

_ZERO = Decimal(0)
_PER_CHARACTER = "billed per input character instead of per text input token"


def parts_fault(
    prompt: int, completion: int, cache_read: int, cache_creation: int, cache_creation_1h: int,
    reasoning: int, audio_input: int, audio_output: int,
) -> str | None:  # fmt: skip
    """Why these counts are not one usage (a part exceeds its total), or None."""
    prompt_parts = cache_read + cache_creation + audio_input
    if prompt_parts > prompt:
        return (
            "cache_read + cache_creation + audio_input tokens are part of prompt_tokens "
            f"and cannot exceed it ({prompt_parts} > {prompt})"
        )
    if cache_creation_1h > cache_creation:
        return "cache_creation_1h_input_tokens exceeds cache_creation_input_tokens"
    completion_parts = reasoning + audio_output
    if completion_parts > completion:
        return (
            "reasoning + audio_output tokens are part of completion_tokens and cannot "
            f"exceed it ({completion_parts} > {completion})"
        )
    return None


class Usage(BaseModel):
    """What one request consumed. Sub-counts are PART OF their totals, never in addition:

    ``cache_read_input_tokens + cache_creation_input_tokens + audio_input_tokens`` are
    included in ``prompt_tokens``; ``cache_creation_1h_input_tokens`` is included in
    ``cache_creation_input_tokens``; ``reasoning_tokens + audio_output_tokens`` are included
    in ``completion_tokens``. A usage that breaks this is rejected rather than guessed at.
    ``images`` counts input images and ``output_images`` the images the model generated;
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
    output_images: NonNegativeInt = 0
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
        fault = parts_fault(*usage_counts(self)[:8])
        if fault is not None:
            raise ValueError(fault)
        return self


def usage_counts(usage: Usage) -> Counts:
    """The counts of ``usage``, in field order (what ``pricing_plan.bill`` reads)."""
    return (
        usage.prompt_tokens, usage.completion_tokens, usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens, usage.cache_creation_1h_input_tokens,
        usage.reasoning_tokens, usage.audio_input_tokens, usage.audio_output_tokens,
        usage.images, usage.output_images, usage.input_seconds, usage.output_seconds,
        usage.characters,
    )  # fmt: skip


def checked_counts(counts: Counts) -> Counts:
    """``counts`` (in Usage's field order) as a valid ``Usage`` has them, raising
    ``ValidationError`` where ``Usage`` would. The common case (plain non-negative ints, zero
    seconds, parts within their totals) is checked here without building a ``Usage``, which
    costs more than pricing the request; anything else is built."""
    for count in counts[:10]:
        if type(count) is not int or count < 0:
            break
    else:
        # Any Decimal zero is valid seconds (tests/ledger/test_pricing_plan.py holds Usage to it).
        input_seconds, output_seconds, characters = counts[10:]
        if (
            type(characters) is int
            and characters >= 0
            and type(input_seconds) is Decimal
            and not input_seconds
            and type(output_seconds) is Decimal
            and not output_seconds
            and parts_fault(*counts[:8]) is None
        ):
            return counts
    return usage_counts(Usage(**dict(zip(Usage.model_fields, counts, strict=True))))


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
    plan = build_plan(
        model, usage.prompt_tokens, open_block=off_peak_block(model.raw, at),
        timed=at is not None, service_tier=service_tier, data_residency=data_residency,
        vertex_location=vertex_location, inference_geo=inference_geo,
    )  # fmt: skip
    billed, unpriced, total, per_character = bill(plan, usage_counts(usage))
    lines = tuple(
        CostLine(component=component, side=side, quantity=Decimal(quantity),
                 unit_price=None if rate is None else rate[0],
                 price_key=None if rate is None else rate[1], amount=amount)
        for component, side, quantity, rate, amount in billed
    )  # fmt: skip
    return CostBreakdown(
        model=model.name,
        lines=lines,
        total=total,
        unpriced=tuple(unpriced),
        tier=plan.tier,
        service_tier=plan.service_tier,
        off_peak=plan.off_peak,
        at=at,
        notes=(*plan.notes, *((_PER_CHARACTER,) if per_character else ()), *plan.region_notes),
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
