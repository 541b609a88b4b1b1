"""What pricing one request reads besides its counters, resolved once, and the billing itself.

A ``Plan`` is the rate of each billed component, the uplifts and the notes for one model
record under one set of conditions (service tier, off-peak window open or not, region) and
one prompt-size bucket (``pricing_rates.prompt_boundaries``). ``bill`` is the arithmetic on
a request's counters. ``ledger.pricing.price`` builds a plan and bills it into a breakdown;
``PlanCache`` (the projector's) keeps plans, so a batch of events pays rate resolution once
per (record, conditions, bucket) and only the arithmetic per event. One builder and one
biller serve both, so the two cannot disagree on a rule.

Exactness: every amount and sum is computed in ``EXACT`` (200 digits, ``Inexact`` trapped),
so nothing is ever rounded; a count too large for it raises ``decimal.Inexact``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, Inexact, getcontext, setcontext
from itertools import compress
from typing import Literal

from ledger.catalog.record import ModelRecord
from ledger.fields import ServiceTier
from ledger.pricing_batch import batch_rates
from ledger.pricing_rates import TIER_SUFFIXES, Rate, Rates, get, prompt_boundaries, resolve_rates
from ledger.pricing_region import uplifts
from ledger.pricing_time import OffPeakPricing, parsed_block

__all__ = ["EXACT", "Billed", "Counts", "Plan", "PlanCache", "bill", "build_plan"]

Side = Literal["input", "output"]
# Counts of a request, in Usage's field order: prompt, completion, cache read, cache creation,
# cache creation 1h, reasoning, audio input, audio output (tokens), input images, output
# (generated) images, input seconds, output seconds, characters.
Counts = tuple[int, int, int, int, int, int, int, int, int, int, Decimal, Decimal, int]
# One billed component: (component, side, quantity, rate or None if unpriced, amount).
Billed = tuple[str, Side, int | Decimal, Rate, Decimal]

# Counts (events carry at most 10 digits, seconds at most 40) times catalog prices fit
# easily in 200 digits; the trap proves no amount or sum was ever rounded.
EXACT = Context(prec=200, traps=[Inexact])
_ZERO = Decimal(0)
_ONE = Decimal(1)
# LiteLLM's cost paths for these providers take no service tier: their requests are priced
# at standard rates whatever the tier, and so are they here (with a note).
_TIERLESS_PROVIDERS = frozenset({
    "deepseek", "tencent", "perplexity", "xai", "fireworks_ai", "lemonade", "dashscope",
    "qwencloud", "qwen_ai_platform",
})  # fmt: skip
_CHARACTERS = 5  # index of the characters component in Plan.components


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything ``bill`` needs but the counters. ``components`` are in billing order, one
    per quantity ``bill`` derives; ``uplifts`` are (component, multiplier - 1, price key)."""

    components: tuple[tuple[str, Side, Rate], ...]
    uplifts: tuple[tuple[str, Decimal, str], ...]
    tier: str | None
    service_tier: str | None
    off_peak: bool
    notes: tuple[str, ...]  # from the rates, before any note about the usage
    region_notes: tuple[str, ...]  # after them


def _rates(
    model: ModelRecord,
    prompt_tokens: int,
    open_block: OffPeakPricing | None,
    timed: bool,
    service_tier: ServiceTier | None,
    notes: list[str],
) -> tuple[Rates, str | None, bool]:
    """The rates to bill with, the service tier whose prices apply, whether off-peak."""
    if model.has_off_peak_pricing and not timed:
        notes.append("off_peak_pricing not applied: no time given, standard rates used")
    if service_tier == "batch":
        batch = batch_rates(model, prompt_tokens)
        if batch.halved:
            notes.append("no batch input price: the standard rates halved, as LiteLLM does")
        if open_block is not None:
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
    rates = resolve_rates(model, prompt_tokens, suffix=suffix, off_peak=open_block)
    return rates, applied, open_block is not None


def build_plan(
    model: ModelRecord,
    prompt_tokens: int,
    *,
    open_block: OffPeakPricing | None,
    timed: bool,
    service_tier: ServiceTier | None = None,
    data_residency: str | None = None,
    vertex_location: str | None = None,
    inference_geo: str | None = None,
) -> Plan:
    """The plan for a request of ``prompt_tokens`` on ``model``. ``open_block``: the model's
    off-peak block if its window is open at the request's time; ``timed``: a time was given."""
    notes: list[str] = []
    rates, applied_tier, off_peak = _rates(
        model, prompt_tokens, open_block, timed, service_tier, notes
    )
    batch = service_tier == "batch"
    # A batch request has token prices only: other units are reported unpriced.
    prices = model.prices
    char_rate = None if batch else get(prices, "input_cost_per_character")
    components: tuple[tuple[str, Side, Rate], ...] = (
        ("text_input", "input", rates.input),
        ("cache_read_input", "input", rates.cache_read),
        ("cache_creation_input", "input", rates.cache_write),
        ("cache_creation_1h_input", "input", rates.cache_write_1h),
        ("audio_input", "input", rates.audio_in),
        ("characters", "input", char_rate),
        ("images", "input", None if batch else get(prices, "input_cost_per_image")),
        ("input_seconds", "input", None if batch else get(prices, "input_cost_per_second")),
        ("text_output", "output", rates.output),
        ("reasoning_output", "output", rates.reasoning),
        ("audio_output", "output", rates.audio_out),
        ("output_seconds", "output", None if batch else get(prices, "output_cost_per_second")),
        # Generated images: per output image, never at the input image price (rule 6).
        ("output_images", "output", None if batch else get(prices, "output_cost_per_image")),
    )
    applied = uplifts(model, data_residency=data_residency, vertex_location=vertex_location,
                      inference_geo=inference_geo, batch=batch)  # fmt: skip
    region_notes: list[str] = []
    asked = {"data_residency": data_residency, "vertex_location": vertex_location,
             "inference_geo": inference_geo}  # fmt: skip
    for name, value in asked.items():
        if value is not None and not any(u.component.startswith(name) for u in applied):
            why = "batch requests" if batch and name == "inference_geo" else "this model"
            region_notes.append(f"{name} {value}: no uplift for {why}")
    return Plan(
        components=components,
        uplifts=tuple(
            (u.component, EXACT.subtract(u.multiplier, _ONE), u.price_key) for u in applied
        ),
        tier=rates.tier,
        service_tier=applied_tier,
        off_peak=off_peak,
        notes=tuple(notes),
        region_notes=tuple(region_notes),
    )


def bill(plan: Plan, counts: Counts) -> tuple[list[Billed], list[str], Decimal, bool]:
    """Bill ``counts`` (a valid usage: parts within their totals) by ``plan``: the billed
    components in order, uplift lines last; the unpriced components; the exact total; and
    whether input characters were billed instead of text input tokens."""
    (prompt, completion, read, write, write_1h, reasoning, audio_in, audio_out, images,
     output_images, input_seconds, output_seconds, characters) = counts  # fmt: skip
    per_character = characters > 0 and plan.components[_CHARACTERS][2] is not None
    quantities: tuple[int | Decimal, ...] = (
        0 if per_character else prompt - read - write - audio_in,
        read, write - write_1h, write_1h, audio_in, characters, images, input_seconds,
        completion - reasoning - audio_out, reasoning, audio_out, output_seconds, output_images,
    )  # fmt: skip
    billed: list[Billed] = []
    unpriced: list[str] = []
    # Running sums, added to in line order, per side and in all: the very additions a sum
    # over the lines makes, so where a count is too large for EXACT, it is the same addition
    # that raises (in another order another one might, or none).
    sums = {"input": _ZERO, "output": _ZERO}
    total = _ZERO
    # EXACT becomes the thread's context for the arithmetic (cheaper than a localcontext
    # copy per request; nothing here awaits or calls out, and it is always restored).
    caller = getcontext()
    setcontext(EXACT)
    try:
        # Only the components used (a valid usage has no negative quantity): most requests
        # use two or three of the thirteen.
        used = compress(zip(plan.components, quantities, strict=True), quantities)
        for (component, side, rate), quantity in used:
            if rate is None:
                unpriced.append(component)
                amount = _ZERO
            else:
                amount = rate[0] * quantity
            billed.append((component, side, quantity, rate, amount))
            sums[side] += amount
            total += amount
        for component, extra, price_key in plan.uplifts:
            # An uplift multiplies everything billed so far, one line per side.
            for side in ("input", "output"):
                subtotal = sums[side]
                if subtotal:
                    amount = subtotal * extra
                    billed.append((component, side, subtotal, (extra, price_key), amount))
                    sums[side] = subtotal + amount
                    total += amount
    finally:
        setcontext(caller)
    return billed, unpriced, total, per_character


class _Record:
    """One model record's share of a ``PlanCache``: its plans and what keys them."""

    __slots__ = ("_block", "bounds", "model", "plans")

    def __init__(self, model: ModelRecord) -> None:
        self.model = model  # held, so its id() is not reused while this entry lives
        self.bounds = prompt_boundaries(model)
        self.plans: dict[tuple[object, ...], Plan] = {}
        self._block: OffPeakPricing | Literal[False] | None = False  # False: not parsed yet

    def open_block(self, at: datetime | None) -> OffPeakPricing | None:
        """As ``pricing_time.off_peak_block``, with the block parsed once."""
        if at is None:
            return None
        if self._block is False:
            self._block = parsed_block(self.model.raw)
        return self._block if self._block is not None and self._block.is_open(at) else None


class PlanCache:
    """Plans kept by (model record, conditions, prompt-size bucket), for pricing many requests
    on few records: ``total`` equals ``price(...).total`` (None where ``price`` reports
    something unpriced) without resolving rates or building a breakdown per request.

    Records are told apart by identity: a record is immutable, and the projector keeps one
    object per price-history row. Bounded: past ``max_plans`` plans (about 2 KB each) it
    starts over.
    """

    def __init__(self, max_plans: int = 4096) -> None:
        self._records: dict[int, _Record] = {}
        self._size = 0
        self._max_plans = max_plans

    def __len__(self) -> int:
        """How many plans are held."""
        return sum(len(entry.plans) for entry in self._records.values())

    def plan(
        self,
        model: ModelRecord,
        prompt_tokens: int,
        *,
        at: datetime | None = None,
        service_tier: ServiceTier | None = None,
        data_residency: str | None = None,
        vertex_location: str | None = None,
        inference_geo: str | None = None,
    ) -> Plan:
        return self._plan(model, prompt_tokens, at, service_tier, data_residency,
                          vertex_location, inference_geo)  # fmt: skip

    def _plan(
        self,
        model: ModelRecord,
        prompt_tokens: int,
        at: datetime | None,
        service_tier: ServiceTier | None,
        data_residency: str | None,
        vertex_location: str | None,
        inference_geo: str | None,
    ) -> Plan:
        entry = self._records.get(id(model))
        if entry is None or entry.model is not model:
            if self._size >= self._max_plans:
                self._records.clear()
                self._size = 0
            entry = self._records[id(model)] = _Record(model)
            self._size += 1  # entries count too: a record whose plans all fail still costs
        open_block = entry.open_block(at)
        bounds = entry.bounds
        key = (
            service_tier, open_block is not None, at is not None, data_residency,
            vertex_location, inference_geo, bisect_left(bounds, prompt_tokens),
            bisect_right(bounds, prompt_tokens),
        )  # fmt: skip
        found = entry.plans.get(key)
        if found is None:
            found = build_plan(
                model, prompt_tokens, open_block=open_block, timed=at is not None,
                service_tier=service_tier, data_residency=data_residency,
                vertex_location=vertex_location, inference_geo=inference_geo,
            )  # fmt: skip
            if self._size >= self._max_plans:
                self._records = {id(model): entry}
                entry.plans.clear()
                self._size = 0
            entry.plans[key] = found
            self._size += 1
        return found

    def total(
        self,
        model: ModelRecord,
        counts: Counts,
        *,
        at: datetime | None = None,
        service_tier: ServiceTier | None = None,
        data_residency: str | None = None,
        vertex_location: str | None = None,
        inference_geo: str | None = None,
    ) -> Decimal | None:
        """The exact cost of a request with ``counts`` (valid: see ``pricing.checked_counts``),
        None when a unit it used has no price."""
        plan = self._plan(model, counts[0], at, service_tier, data_residency, vertex_location,
                          inference_geo)  # fmt: skip
        _, unpriced, total, _ = bill(plan, counts)
        return None if unpriced else total
