"""Which rate bills each component of a request: long-context tiers, service tiers, off-peak.

``resolve_rates`` follows LiteLLM 1.110.2's ``_get_token_base_cost`` and
``_resolve_billed_reasoning_rate`` (docs/pricing.md, rules 2-5 and 10-11). Every rate comes
with the price-map key it was read from, so a breakdown can name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict

from ledger.catalog.record import ModelRecord, PriceTier
from ledger.pricing_time import OffPeakPricing

__all__ = [
    "INCLUSIVE_THRESHOLD_PROVIDERS",
    "TIER_SUFFIXES",
    "Rate",
    "Rates",
    "crossed",
    "get",
    "parse_threshold",
    "prompt_boundaries",
    "resolve_rates",
    "threshold_of_key",
]

Rate = tuple[Decimal, str] | None  # (price, key it came from)

INPUT = "input_cost_per_token"
OUTPUT = "output_cost_per_token"
CACHE_READ = "cache_read_input_token_cost"
CACHE_WRITE = "cache_creation_input_token_cost"
CACHE_WRITE_1H = "cache_creation_input_token_cost_above_1hr"
AUDIO_IN = "input_cost_per_audio_token"
AUDIO_OUT = "output_cost_per_audio_token"
REASONING = "output_cost_per_reasoning_token"
_RATE_PREFIXES = (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE)
_THRESHOLD_PREFIXES = tuple(f"{p}_above_" for p in _RATE_PREFIXES)
# The key suffix each service tier reads (LiteLLM's ServiceTier; "fast" is its alias of
# priority). "batch" is not here: batch requests have their own rules (pricing_batch).
TIER_SUFFIXES: dict[str, str] = {
    "priority": "_priority",
    "fast": "_priority",
    "flex": "_flex",
    "balanced": "_balanced",
    "ultrafast": "_ultrafast",
}
# Threshold keys of a service tier or of the batch API are not standard prices; a request
# reads only the standard ones and those of its own tier.
_NON_STANDARD_SUFFIXES = (
    "_ultrafast", "_priority", "_balanced", "_flex", "_fast", "_auto", "_batches",
)  # fmt: skip
# LiteLLM's fallback from a tier key to the standard one finds the tier by substring, the
# longest first, so "_ultrafast" is never mistaken for "_fast".
_FALLBACK_SUFFIXES = ("_ultrafast", "_balanced", "_priority", "_auto", "_flex", "_fast")
# xAI bills the higher tier once the prompt *reaches* the threshold; everyone else above it.
INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})
# LiteLLM's FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO: Fireworks bills cache hits at half
# the input rate when the price map lists no cache-read price.
_FIREWORKS_CACHE_READ_RATIO = Decimal("0.5")


class Rates(BaseModel):
    """The rate of each component of one request; None where there is no price."""

    model_config = ConfigDict(frozen=True)

    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    cache_write_1h: Rate
    reasoning: Rate
    audio_in: Rate
    audio_out: Rate
    tier: str | None  # the long-context tier or tiered_pricing row that applied


def get(prices: Mapping[str, Decimal], key: str) -> Rate:
    value = prices.get(key)
    return None if value is None else (value, key)


def _get_or_standard(prices: Mapping[str, Decimal], key: str, default: Rate = None) -> Rate:
    """A tier key, else the same key without its tier suffix, else ``default``
    (LiteLLM's ``get_cost_per_unit``)."""
    found = get(prices, key)
    if found is not None:
        return found
    suffix = next((s for s in _FALLBACK_SUFFIXES if s in key), None)
    if suffix is not None:
        return get(prices, key.replace(suffix, "")) or default
    return default


def parse_threshold(text: str) -> Decimal | None:
    """``"200k"`` -> 200000, ``"128"`` -> 128, as LiteLLM's ``_parse_token_threshold``."""
    try:
        number = Decimal(text.replace("k", ""))
    except InvalidOperation:
        return None
    return number * 1000 if "k" in text else number


def threshold_of_key(key: str) -> str:
    return key.rsplit("_above_", 1)[1].split("_tokens")[0]


def crossed(prompt_tokens: int, threshold: Decimal, inclusive: bool) -> bool:
    return prompt_tokens > threshold or (inclusive and prompt_tokens == threshold)


def prompt_boundaries(model: ModelRecord) -> tuple[Decimal, ...]:
    """Every number a rule compares a request's prompt size with, sorted: each threshold of
    an ``_above_`` key (read by the long-context, audio and batch rules alike), each bound of
    a ``tiered_pricing`` row, and 0. Two prompt sizes on the same side of (or equal to) each
    of them get the same rates, which is what lets ``pricing_plan`` resolve rates once per
    bucket; a rule that compares the prompt with anything else must add it here."""
    found = {Decimal(0)}
    for key in model.prices:
        if "_above_" in key:
            value = parse_threshold(threshold_of_key(key))
            if value is not None and value.is_finite():
                found.add(value)
    for tier in model.tiered_pricing:
        found.update((tier.range_start, tier.range_end))
    return tuple(sorted(found))


def _crossed_thresholds(
    prices: Mapping[str, Decimal], prompt: int, inclusive: bool, suffix: str
) -> list[str]:
    """Threshold labels ("128k", "200k"...) the prompt crossed, lowest first: from the
    standard threshold keys and those of the request's service tier."""
    labels: dict[str, Decimal] = {}
    for key in prices:
        if (
            key.startswith(_THRESHOLD_PREFIXES)
            and "_tokens" in key
            and (not key.endswith(_NON_STANDARD_SUFFIXES) or (suffix and key.endswith(suffix)))
        ):
            label = threshold_of_key(key)
            value = parse_threshold(label)
            if value is not None and crossed(prompt, value, inclusive):
                labels[label] = value
    return sorted(labels, key=labels.__getitem__)


def _select_price_tier(model: ModelRecord, prompt_tokens: int) -> PriceTier | None:
    """Dashscope-style ``tiered_pricing``: the tier whose ``(start, end]`` holds the prompt;
    above every range the last tier applies. The tier must carry an input price."""
    if not model.tiered_pricing or prompt_tokens <= 0:
        return None
    ordered = sorted(model.tiered_pricing, key=lambda t: t.range_start)
    tier = next((t for t in ordered if t.range_start < prompt_tokens <= t.range_end), ordered[-1])
    return tier if INPUT in tier.prices else None


def _off(off_peak: OffPeakPricing | None, key: str, rate: Rate) -> Rate:
    """The off-peak rate for ``key`` when the window is open and the block lists one."""
    if off_peak is None or key not in off_peak.prices:
        return rate
    return (off_peak.prices[key], f"off_peak_pricing.{key}")


def _tiered_table_rates(
    model: ModelRecord, tier: PriceTier, prompt_tokens: int, off_peak: OffPeakPricing | None
) -> Rates:
    label = f"tiered_pricing({tier.range_start}, {tier.range_end}]"
    p = tier.prices
    inp: Rate = (p[INPUT], f"{label}.{INPUT}")

    def own_or(key: str, fallback: Rate) -> Rate:
        return (p[key], f"{label}.{key}") if key in p else fallback

    # A table row's missing cache prices are its input price, before any off-peak rate.
    out = _off(off_peak, OUTPUT, own_or(OUTPUT, get(model.prices, OUTPUT)))
    write = _off(off_peak, CACHE_WRITE, own_or(CACHE_WRITE, inp))
    reasoning = (
        _off(off_peak, REASONING, None)
        or own_or(REASONING, own_or(OUTPUT, None))
        or get(model.prices, REASONING)
        or out
    )
    inp = _off(off_peak, INPUT, inp)
    return Rates(
        input=inp,
        output=out,
        cache_read=_off(off_peak, CACHE_READ, own_or(CACHE_READ, own_or(INPUT, None))),
        cache_write=write,
        cache_write_1h=own_or(CACHE_WRITE_1H, write),
        reasoning=reasoning,
        audio_in=_audio_in_rate(
            model.prices, prompt_tokens, model.provider in INCLUSIVE_THRESHOLD_PROVIDERS, inp, ""
        ),
        audio_out=get(model.prices, AUDIO_OUT) or out,
        tier=label,
    )


def highest_crossed_key(
    prices: Mapping[str, Decimal], base: str, suffix: str, prompt: int, inclusive: bool
) -> str | None:
    """The ``<base>_above_<N>_tokens[suffix]`` key whose threshold N is the highest the
    prompt crossed (``inclusive``: at N counts), or None."""
    best: tuple[Decimal, str] | None = None
    for key in prices:
        if key.startswith(f"{base}_above_") and key.endswith(("_tokens", f"_tokens{suffix}")):
            threshold = parse_threshold(threshold_of_key(key))
            if (
                threshold is not None
                and crossed(prompt, threshold, inclusive)
                and (best is None or threshold > best[0])
            ):
                best = (threshold, key)
    return None if best is None else best[1]


def _audio_in_rate(
    prices: Mapping[str, Decimal], prompt: int, inclusive: bool, inp: Rate, suffix: str
) -> Rate:
    """The audio input rate: the service tier's, of the highest long-context tier crossed,
    falling back to the standard audio key; the (resolved) input rate if there is none."""
    base = AUDIO_IN
    found = highest_crossed_key(prices, base, suffix, prompt, inclusive)
    key = f"{found.removesuffix(suffix)}{suffix}" if found is not None else f"{base}{suffix}"
    if key not in prices and key.removesuffix(suffix) not in prices:
        return inp
    return _get_or_standard(prices, key)


def _reasoning_rate(prices: Mapping[str, Decimal], suffix: str, out: Rate) -> Rate:
    """LiteLLM's ``_resolve_reasoning_token_cost``: the tier's reasoning price, else the
    tier's output rate when the tier prices output, else the standard reasoning price, else
    the output rate."""
    own = get(prices, f"{REASONING}{suffix}")
    if own is not None:
        return own
    if suffix and f"{OUTPUT}{suffix}" in prices:
        return out
    return get(prices, REASONING) or out


def resolve_rates(
    model: ModelRecord,
    prompt_tokens: int,
    *,
    suffix: str = "",
    off_peak: OffPeakPricing | None = None,
) -> Rates:
    """The rates for a request of ``prompt_tokens`` at the service tier whose keys end with
    ``suffix`` ("" = standard), with ``off_peak`` rates when its window is open."""
    table_tier = _select_price_tier(model, prompt_tokens)
    if table_tier is not None:
        return _tiered_table_rates(model, table_tier, prompt_tokens, off_peak)

    prices: dict[str, Decimal] = dict(model.prices)
    if model.provider == "fireworks_ai" and CACHE_READ not in prices and INPUT in prices:
        prices[CACHE_READ] = prices[INPUT] * _FIREWORKS_CACHE_READ_RATIO
    inclusive = model.provider in INCLUSIVE_THRESHOLD_PROVIDERS

    inp = _get_or_standard(prices, f"{INPUT}{suffix}")
    out = _get_or_standard(prices, f"{OUTPUT}{suffix}")
    if (out is None or out[0] == 0) and "output_cost_per_image_token" in prices:
        # Image-generation models price their output only per image token.
        out = get(prices, "output_cost_per_image_token")
    read = _get_or_standard(prices, f"{CACHE_READ}{suffix}")
    write = _get_or_standard(prices, f"{CACHE_WRITE}{suffix}")
    write_1h_key = f"{CACHE_WRITE_1H}{suffix}"

    # Long-context tiers: every crossed threshold overrides each rate it prices (the tier's
    # key first, then the standard one), so the highest crossed threshold that prices a
    # component wins for that component; rates the tier does not list keep their price.
    labels = _crossed_thresholds(prices, prompt_tokens, inclusive, suffix)
    for label in labels:
        inp = _get_or_standard(prices, f"{INPUT}_above_{label}_tokens{suffix}", inp)
        out = _get_or_standard(prices, f"{OUTPUT}_above_{label}_tokens{suffix}", out)
        read = _get_or_standard(prices, f"{CACHE_READ}_above_{label}_tokens{suffix}", read)
        write = _get_or_standard(prices, f"{CACHE_WRITE}_above_{label}_tokens{suffix}", write)
        tiered_1h = f"{CACHE_WRITE_1H}_above_{label}_tokens{suffix}"
        if tiered_1h in prices:
            write_1h_key = tiered_1h

    # No cache price published means cached tokens are ordinary input tokens (at the
    # off-peak input rate while the window is open). Then off-peak rates replace the rest.
    read = _off(off_peak, CACHE_READ, read or _off(off_peak, INPUT, inp))
    write = _off(off_peak, CACHE_WRITE, write or _off(off_peak, INPUT, inp))
    inp = _off(off_peak, INPUT, inp)
    out = _off(off_peak, OUTPUT, out)
    return Rates(
        input=inp,
        output=out,
        cache_read=read,
        cache_write=write,
        cache_write_1h=_get_or_standard(prices, write_1h_key) or write,
        reasoning=_off(off_peak, REASONING, None) or _reasoning_rate(prices, suffix, out),
        audio_in=_audio_in_rate(prices, prompt_tokens, inclusive, inp, suffix),
        audio_out=get(prices, AUDIO_OUT) or out,
        tier=f"above_{labels[-1]}_tokens" if labels else None,
    )
