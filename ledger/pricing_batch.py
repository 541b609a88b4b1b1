"""Batch-API prices: what a request sent through a provider's batch API costs.

Follows LiteLLM 1.110.2's ``batch_cost_calculator`` (docs/pricing.md, rule 11):

* With a batch input price (``input_cost_per_token_batches``, or its long-context tier
  ``input_cost_per_token_above_<N>_tokens_batches``), tokens bill at the ``_batches`` rates.
  Cache reads without a batch price bill at the standard cache-read rate; cache writes
  without a batch price, and cache reads without any price, bill as input tokens.
* Without one, the standard rates are halved (the batch APIs of OpenAI, Anthropic and
  Google cost half): input, cache reads, cache writes (one rate for every lifetime) and,
  unless there is a batch output price, output.
* Output (text, reasoning, audio) bills at one rate: the batch output price or half the
  standard output price. Audio input has its own batch price when listed.
* Nothing else of the request (images, characters, seconds) has a batch price: those units
  are reported unpriced. Off-peak prices and service tiers do not apply to batches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from ledger.catalog.record import ModelRecord
from ledger.pricing_rates import (
    AUDIO_IN,
    CACHE_READ,
    CACHE_WRITE,
    CACHE_WRITE_1H,
    INCLUSIVE_THRESHOLD_PROVIDERS,
    INPUT,
    OUTPUT,
    Rate,
    Rates,
    crossed,
    get,
    highest_crossed_key,
    parse_threshold,
)

__all__ = ["BatchRates", "batch_rates"]

_BATCHES = "_batches"
_HALF = Decimal("0.5")
_TIERED_BATCH_KEY = re.compile(
    rf"^({INPUT}|{OUTPUT}|{CACHE_READ}|{CACHE_WRITE}|{CACHE_WRITE_1H}"
    rf"|cache_creation_input_token_cost_above_12hr)_above_(\d+k?)_tokens{_BATCHES}$"
)


class BatchRates(BaseModel):
    model_config = ConfigDict(frozen=True)

    rates: Rates
    halved: bool  # no batch input price: the standard rates halved


def _batch_rate(prices: Mapping[str, Decimal], prefix: str, prompt: int, inclusive: bool) -> Rate:
    """``<prefix>_batches``, or its highest crossed long-context tier."""
    best: tuple[Decimal, str] | None = None
    for key in prices:
        match = _TIERED_BATCH_KEY.match(key)
        if match is None or match.group(1) != prefix:
            continue
        threshold = parse_threshold(match.group(2))
        if (
            threshold is not None
            and crossed(prompt, threshold, inclusive)
            and (best is None or threshold > best[0])
        ):
            best = (threshold, key)
    return get(prices, best[1]) if best is not None else get(prices, f"{prefix}{_BATCHES}")


def _context_rate(prices: Mapping[str, Decimal], base: str, suffix: str, prompt: int) -> Rate:
    """LiteLLM's ``get_modality_token_cost_key`` for ``base + suffix``: the highest crossed
    ``<base>_above_<N>_tokens[suffix]`` key (always ``>``), read as the ``suffix`` key."""
    found = highest_crossed_key(prices, base, suffix, prompt, False)
    if found is None:
        return get(prices, f"{base}{suffix}")
    return get(prices, f"{found.removesuffix(suffix)}{suffix}")


def _halved(rate: Rate) -> Rate:
    return None if rate is None else (rate[0] * _HALF, f"{rate[1]} x 0.5 (no batch price)")


def batch_rates(model: ModelRecord, prompt_tokens: int) -> BatchRates:
    prices = model.prices
    inclusive = model.provider in INCLUSIVE_THRESHOLD_PROVIDERS
    inp = _batch_rate(prices, INPUT, prompt_tokens, inclusive)
    out = _batch_rate(prices, OUTPUT, prompt_tokens, inclusive) or _halved(get(prices, OUTPUT))
    if inp is None:
        # No batch input price: half of every standard input-side rate, no tiers; and no
        # input side at all without a standard input price.
        half_in = _halved(get(prices, INPUT))
        write = half_in and _halved(get(prices, CACHE_WRITE) or get(prices, INPUT))
        rates = Rates(
            input=half_in, output=out, cache_read=half_in and _halved(get(prices, CACHE_READ)),
            cache_write=write, cache_write_1h=write, reasoning=out, audio_in=half_in,
            audio_out=out, tier=None,
        )  # fmt: skip
        return BatchRates(rates=rates, halved=True)
    read = _batch_rate(prices, CACHE_READ, prompt_tokens, inclusive) or _context_rate(
        prices, CACHE_READ, "", prompt_tokens
    )
    write = _batch_rate(prices, CACHE_WRITE, prompt_tokens, inclusive)
    write_1h = _batch_rate(prices, CACHE_WRITE_1H, prompt_tokens, inclusive)
    write_12h = _batch_rate(
        prices, "cache_creation_input_token_cost_above_12hr", prompt_tokens, inclusive
    )
    if write is None and write_1h is None and write_12h is None:
        write = write_1h = inp  # no batch cache-write price: writes are input tokens
    audio = (
        _context_rate(prices, AUDIO_IN, _BATCHES, prompt_tokens)
        or get(prices, f"{AUDIO_IN}{_BATCHES}")
        or inp
    )
    rates = Rates(
        input=inp, output=out, cache_read=read or inp, cache_write=write or inp,
        cache_write_1h=write_1h or write or inp, reasoning=out, audio_in=audio, audio_out=out,
        tier=None,
    )  # fmt: skip
    return BatchRates(rates=rates, halved=False)
