"""Generated pricing cases over every model of the packaged price map, for the tests that hold
a fast pricing path to ``ledger.pricing.price`` (tests/ledger/test_pricing_plan.py and
tests/projections/test_pricer_exact.py).

Each model gets: every service tier; prompt sizes on, just below and just above every number
its rules compare a prompt with (long-context thresholds, ``tiered_pricing`` bounds, 0), and
at random up to huge; every region input the rules know, on models that list an uplift or
are on an inference-geo provider (one at random elsewhere); moments inside, outside and on
the edges of the off-peak windows for models that have them, and no moment at all. Counts
are random splits of those totals: zeros, cache reads and writes (1h too), audio, reasoning,
input and generated images, characters and seconds.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from pydantic import ValidationError

from ledger.catalog import ModelRecord, load_snapshot
from ledger.events import UsageRecorded
from ledger.fields import SERVICE_TIERS
from ledger.pricing import Usage, price
from ledger.pricing_rates import prompt_boundaries
from projections.pricer import CATALOG, UNPRICED

TIERS: tuple[str | None, ...] = (None, *SERVICE_TIERS)
RESIDENCIES = (None, "us", "eu", "fedramp")
LOCATIONS = (None, "global", "us-east5")
GEOS = (None, "us", "global", "not_available", "eu")
REGIONS = tuple(itertools.product(RESIDENCIES, LOCATIONS, GEOS))
_NOON = datetime(2026, 3, 4, 12, tzinfo=UTC)
# Inside, outside and on the edges of the snapshot's off-peak windows, weekdays and weekends,
# in UTC and in another offset (the moments LiteLLM's fixture was made at, and a few more).
MOMENTS = tuple(datetime.fromisoformat(text) for text in (
    "2026-03-04T00:30:00+00:00", "2026-03-04T01:00:00+00:00", "2026-03-04T03:59:59+00:00",
    "2026-03-04T04:00:00+00:00", "2026-03-04T05:59:59.999999+00:00", "2026-03-04T06:00:00+00:00",
    "2026-03-04T08:00:00+00:00", "2026-03-04T09:59:59+00:00", "2026-03-04T10:00:00+00:00",
    "2026-03-04T16:29:59+00:00", "2026-03-04T16:30:00+00:00", "2026-03-04T23:59:59+00:00",
    "2026-03-04T14:30:00+08:00", "2026-03-04T12:30:00+08:00", "2026-03-07T08:00:00+00:00",
    "2026-03-08T02:00:00+00:00", "2026-03-08T20:00:00+00:00", "2026-03-06T17:00:00+00:00",
    "2026-03-09T02:00:00+00:00", "2026-03-08T16:00:00+00:00",
))  # fmt: skip


@dataclass(frozen=True)
class Case:
    model: ModelRecord
    conditions: dict[str, Any]  # price()'s keyword arguments
    counts: tuple[Any, ...]  # Usage's fields in order (ledger.pricing_plan.Counts)

    def usage_fields(self) -> dict[str, Any]:
        from ledger.pricing import Usage

        return dict(zip(Usage.model_fields, self.counts, strict=True))


@cache
def records() -> tuple[ModelRecord, ...]:
    return tuple(ModelRecord.from_berriai(name, entry) for name, entry in
                 sorted(load_snapshot().items()))  # fmt: skip


def _part(rng: random.Random, total: int) -> int:
    roll = rng.random()
    if total <= 0 or roll < 0.5:
        return 0
    return total if roll < 0.55 else rng.randint(0, total)


def counts(rng: random.Random, prompt: int, *, huge: int = 10**40) -> tuple[Any, ...]:
    """A valid usage of ``prompt`` prompt tokens: random parts, other units now and then."""
    completion = rng.choice((0, 1, rng.randint(0, 5000), rng.randint(0, 10**7), huge))
    cache_read = _part(rng, prompt)
    cache_creation = _part(rng, prompt - cache_read)
    audio_in = _part(rng, prompt - cache_read - cache_creation)
    reasoning = _part(rng, completion)

    def seconds() -> Decimal:
        if rng.random() < 0.8:
            return Decimal(0)
        return Decimal(rng.randint(0, 10**9)).scaleb(-rng.randint(0, 9))

    return (
        prompt, completion, cache_read, cache_creation, _part(rng, cache_creation), reasoning,
        audio_in, _part(rng, completion - reasoning),
        rng.choice((0, 0, 0, 1, rng.randint(0, 10**4))),
        rng.choice((0, 0, 0, 1, rng.randint(0, 10**4))), seconds(), seconds(),
        rng.choice((0, 0, 0, 7, rng.randint(0, 10**6))),
    )  # fmt: skip


def prompts(rng: random.Random, model: ModelRecord, *, huge: int = 10**40) -> list[int]:
    # 10**195 tokens overflow the exact arithmetic (200 digits): both paths must raise.
    sizes = {0, 1, rng.randint(0, 10**4), rng.randint(0, 3 * 10**6), huge, 10**195}
    for bound in prompt_boundaries(model):
        if bound == bound.to_integral_value():
            sizes.update(n for n in (int(bound) - 1, int(bound), int(bound) + 1) if n >= 0)
        else:  # a fractional bound: the sizes on either side
            sizes.update(n for n in (int(bound), int(bound) + 1) if n >= 0)
    return sorted(sizes)


def _regions(model: ModelRecord) -> tuple[tuple[str | None, str | None, str | None], ...]:
    raw = model.raw
    listed = any("uplift" in key for key in raw) or (
        model.provider in ("anthropic", "bedrock") and "provider_specific_entry" in raw
    )
    return REGIONS if listed else ()


@dataclass(frozen=True)
class _Maker:
    model: ModelRecord
    rng: random.Random
    huge: int

    def __call__(self, tier: str | None, at: datetime | None,
                 region: tuple[str | None, ...], prompt: int) -> Case:  # fmt: skip
        residency, location, geo = region
        conditions = {"at": at, "service_tier": tier, "data_residency": residency,
                      "vertex_location": location, "inference_geo": geo}  # fmt: skip
        return Case(self.model, conditions, counts(self.rng, prompt, huge=self.huge))


def cases(seed: int = 15, *, huge: int = 10**40) -> Iterator[Case]:
    """Every model of the snapshot, in order; a model's cases share one random stream."""
    for model in records():
        rng = random.Random(f"{seed}:{model.name}")
        moments = (None, *MOMENTS) if model.has_off_peak_pricing else (None, _NOON)
        regions = _regions(model) or (rng.choice(REGIONS),)
        sizes = prompts(rng, model, huge=huge)

        case = _Maker(model, rng, huge)

        # Every tier at every moment; every prompt size at a random tier (twice: a plan is then
        # reused for another usage of its bucket); every region once. A model whose rules
        # compare the prompt with 0 alone gets each tier once, the sizes taken in turn.
        if len(prompt_boundaries(model)) == 1 and not model.has_off_peak_pricing:
            for tier, prompt in zip(TIERS, itertools.cycle(sizes), strict=False):
                yield case(tier, rng.choice(moments), rng.choice(regions), prompt)
        else:
            for tier, at in itertools.product(TIERS, moments):
                yield case(tier, at, rng.choice(regions), rng.choice(sizes))
            for prompt in sizes:
                for _ in range(2):
                    yield case(rng.choice(TIERS), rng.choice(moments), rng.choice(regions), prompt)
        for region in _regions(model):
            yield case(rng.choice(TIERS), rng.choice(moments), region, rng.choice(sizes))


# The event's count fields in Usage's order; None where the event has none (1h cache writes).
COUNT_FIELDS = (
    "prompt_tokens", "completion_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", None, "reasoning_tokens", "audio_input_tokens",
    "audio_output_tokens", "images", "output_images", "input_seconds", "output_seconds",
    "characters",
)  # fmt: skip


def reference_cost(record: ModelRecord, event: UsageRecorded) -> tuple[Decimal | None, str]:
    """How the projector priced an event before plans were cached: a Usage, then price()
    (the defining function). The test of the pricer and bench/pricing.py compare with it."""
    try:
        usage = Usage(**{name: getattr(event, name) for name in COUNT_FIELDS if name})
    except ValidationError:
        return None, UNPRICED
    breakdown = price(
        record, usage, at=event.occurred_at, service_tier=event.service_tier,
        data_residency=event.data_residency, vertex_location=event.vertex_location,
        inference_geo=event.inference_geo,
    )  # fmt: skip
    return (None, UNPRICED) if breakdown.unpriced else (breakdown.total, CATALOG)
