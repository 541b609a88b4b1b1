"""How and when a request was served changes its price: off-peak windows, service tiers,
batches and regional uplifts (docs/pricing.md, rules 10-13), worked by hand from the
packaged price file. LiteLLM's own numbers for all of them are in test_pricing.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from typing import Any

import pytest

from ledger.catalog import ModelRecord, load_snapshot
from ledger.pricing import CostBreakdown, Usage, price
from ledger.pricing_time import OffPeakPricing

D = Decimal
WEDNESDAY = datetime(2026, 3, 4, tzinfo=UTC)
PEAK = WEDNESDAY.replace(hour=8)


@cache
def model(name: str) -> ModelRecord:
    return ModelRecord.from_berriai(name, load_snapshot()[name])


def breakdown(name: str, usage: dict[str, int], **conditions: Any) -> CostBreakdown:
    return price(model(name), Usage(**usage), **conditions)


# -- rule 10: off-peak windows -----------------------------------------------------------------

# deepseek/deepseek-flash: input 3e-7, cache read 6e-9, output 1.2e-6; off-peak (weekdays
# 00:00-01:00, 04:00-06:00 and 10:00-24:00 UTC, weekends all day) 1.5e-7, 3e-9, 6e-7.
DEEPSEEK = {"prompt_tokens": 10_000, "cache_read_input_tokens": 4000, "completion_tokens": 1000}


@pytest.mark.parametrize("name", ["deepseek/deepseek-flash", "deepseek-flash"])
def test_off_peak_rates_apply_inside_the_window(name: str) -> None:
    # The issue: inside the window LiteLLM bills half of what the ledger billed.
    peak = breakdown(name, DEEPSEEK, at=PEAK)
    off = breakdown(name, DEEPSEEK, at=WEDNESDAY.replace(hour=4, minute=30))
    assert peak.total == D("0.0018") + D("0.000024") + D("0.0012") == D("0.003024")
    assert off.total == D("0.0009") + D("0.000012") + D("0.0006") == D("0.001512")
    assert (peak.off_peak, off.off_peak) == (False, True)
    assert {line.price_key for line in off.lines} == {
        "off_peak_pricing.input_cost_per_token",
        "off_peak_pricing.cache_read_input_token_cost",
        "off_peak_pricing.output_cost_per_token",
    }


@pytest.mark.parametrize(
    ("at", "off_peak"),
    [
        (WEDNESDAY.replace(hour=4), True),  # the start is inclusive
        (WEDNESDAY.replace(hour=5, minute=59, second=59), True),
        (WEDNESDAY.replace(hour=6), False),  # the end is exclusive
        (WEDNESDAY.replace(hour=10), True),
        (WEDNESDAY.replace(hour=23, minute=59), True),  # "10:00-00:00" runs to midnight
        (WEDNESDAY.replace(hour=1), False),
        (datetime(2026, 3, 7, 8, tzinfo=UTC), True),  # Saturday: all day
        (datetime(2026, 3, 4, 12, 30, tzinfo=timezone(timedelta(hours=8))), True),  # 04:30Z
        (datetime(2026, 3, 4, 14, 30, tzinfo=timezone(timedelta(hours=8))), False),  # 06:30Z
    ],
)
def test_off_peak_window_edges(at: datetime, off_peak: bool) -> None:
    assert breakdown("deepseek/deepseek-flash", DEEPSEEK, at=at).off_peak is off_peak


def test_without_a_time_off_peak_models_bill_standard_rates_and_say_so() -> None:
    b = breakdown("deepseek/deepseek-flash", DEEPSEEK)
    assert b.total == D("0.003024")
    assert not b.off_peak
    assert any("no time given" in note for note in b.notes)


def test_weekdays_are_read_on_the_blocks_calendar_and_hours_in_utc() -> None:
    block = {
        "input_cost_per_token": 1e-7,
        "windows": [{"hours_utc": "16:00-20:00", "weekdays": ["sat"]}],
    }
    friday_17_utc = datetime(2026, 3, 6, 17, tzinfo=UTC)  # Saturday 01:00 in Shanghai
    assert not OffPeakPricing.parse(block).is_open(friday_17_utc)
    shanghai = OffPeakPricing.parse({**block, "weekday_timezone": "Asia/Shanghai"})
    assert shanghai.is_open(friday_17_utc)
    assert not shanghai.is_open(friday_17_utc + timedelta(hours=3))  # 20:00 is the end


def test_every_day_windows_wrap_midnight_and_malformed_ones_are_ignored() -> None:
    block = OffPeakPricing.parse({"hours_utc": ["16:30-00:30", "nonsense", "25:00-26:00"]})
    assert block.is_open(datetime(2026, 3, 4, 0, 15, tzinfo=UTC))
    assert block.is_open(datetime(2026, 3, 4, 16, 30, tzinfo=UTC))
    assert not block.is_open(datetime(2026, 3, 4, 0, 30, tzinfo=UTC))
    assert block.is_open(datetime(2026, 3, 4, 0, 15))  # naive: UTC, never the host's zone
    whole_day = OffPeakPricing.parse({"hours_utc": "00:00-00:00"})
    assert whole_day.is_open(datetime(2026, 3, 4, 13, 0, tzinfo=UTC))


# -- rule 11: service tiers and batches --------------------------------------------------------

# gpt-5: standard 1.25e-6 / cache read 1.25e-7 / 1e-5; priority 2.5e-6 / 2.5e-7 / 2e-5;
# flex 6.25e-7 / 6.25e-8 / 5e-6.
GPT5 = {"prompt_tokens": 1000, "cache_read_input_tokens": 200, "completion_tokens": 500}


def test_priority_and_flex_prices() -> None:
    priority = breakdown("gpt-5", GPT5, service_tier="priority")
    assert priority.total == D("0.002") + D("0.00005") + D("0.01") == D("0.01205")
    assert priority.service_tier == "priority"
    assert priority.lines[0].price_key == "input_cost_per_token_priority"
    assert breakdown("gpt-5", GPT5, service_tier="fast").total == priority.total
    flex = breakdown("gpt-5", GPT5, service_tier="flex")
    assert flex.total == D("0.0005") + D("0.0000125") + D("0.0025") == D("0.0030125")
    assert breakdown("gpt-5", GPT5).total == D("0.001") + D("0.000025") + D("0.005")


def test_a_tier_above_a_long_context_threshold_uses_the_tiers_long_context_price() -> None:
    # gemini-2.5-pro priority above 200k: input 4.5e-6, output 2.7e-5.
    b = breakdown("gemini-2.5-pro", {"prompt_tokens": 250_000, "completion_tokens": 1000},
                  service_tier="priority")  # fmt: skip
    assert b.total == D("1.125") + D("0.027")
    assert (b.tier, b.service_tier) == ("above_200k_tokens", "priority")


def test_a_tier_the_model_does_not_price_bills_standard_rates_with_a_note() -> None:
    b = breakdown("claude-sonnet-4-6", {"prompt_tokens": 1000, "completion_tokens": 100},
                  service_tier="priority")  # fmt: skip
    assert b.total == D("0.0045")
    assert b.service_tier is None
    assert "no priority prices: standard rates used" in b.notes


def test_providers_litellm_prices_without_tiers_keep_standard_rates() -> None:
    name = next(n for n, e in load_snapshot().items() if isinstance(e, dict)
                and e.get("litellm_provider") == "fireworks_ai"
                and "input_cost_per_token_priority" in e)  # fmt: skip
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    b = breakdown(name, usage, service_tier="priority")
    assert b.total == breakdown(name, usage).total
    assert b.service_tier is None and "LiteLLM prices fireworks_ai" in b.notes[0]


def test_batch_with_batch_prices() -> None:
    # gpt-4o batch: input 1.25e-6, output 5e-6; no batch cache-read price: the standard 1.25e-6.
    b = breakdown("gpt-4o", {"prompt_tokens": 1000, "cache_read_input_tokens": 200,
                             "completion_tokens": 500}, service_tier="batch")  # fmt: skip
    assert b.total == D("0.001") + D("0.00025") + D("0.0025") == D("0.00375")
    assert b.service_tier == "batch"


def test_batch_without_batch_prices_halves_the_standard_rates() -> None:
    # claude-mythos-preview: input 1e-5, cache read 1e-6, cache write 1.25e-5 (1 h: 2e-5),
    # output 5e-5; no batch prices. Every write bills at one rate, half the 5-minute one.
    usage = {"prompt_tokens": 1000, "cache_read_input_tokens": 200,
             "cache_creation_input_tokens": 100, "cache_creation_1h_input_tokens": 50,
             "completion_tokens": 100, "reasoning_tokens": 40}  # fmt: skip
    b = breakdown("claude-mythos-preview", usage, service_tier="batch")
    assert b.amount("text_input") == 700 * D("0.000005")
    assert b.amount("cache_read_input") == 200 * D("0.0000005")
    assert b.amount("cache_creation_1h_input") == 50 * D("0.00000625")
    assert b.output_cost == 100 * D("0.000025")  # reasoning at the output rate
    assert b.total == D("0.0035") + D("0.0001") + D("0.000625") + D("0.0025") == D("0.006725")
    assert any("halved" in note for note in b.notes)


def test_batch_has_no_price_for_images() -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 50, "images": 3}
    standard = breakdown("deep-research-pro-preview-12-2025", usage)
    batch = breakdown("deep-research-pro-preview-12-2025", usage, service_tier="batch")
    assert standard.complete and standard.amount("images") == D("0.0033")
    assert batch.unpriced == ("images",)
    generated = {"prompt_tokens": 100, "completion_tokens": 0, "output_images": 2}
    assert breakdown("gemini-3-pro-image-preview", generated).total == 2 * D("0.134") + D(
        "0.0002")
    batch = breakdown("gemini-3-pro-image-preview", generated, service_tier="batch")
    assert batch.unpriced == ("output_images",)


# -- rule 12: regional uplifts -----------------------------------------------------------------

SMALL = {"prompt_tokens": 1000, "completion_tokens": 100}


def test_data_residency_uplift_multiplies_both_sides() -> None:
    # gpt-5.4: 2.5e-6 / 1.5e-5; regional processing (us, eu) and FedRAMP: 1.1.
    assert breakdown("gpt-5.4", SMALL).total == D("0.004")
    eu = breakdown("gpt-5.4", SMALL, data_residency="eu")
    assert eu.total == D("0.0044")
    assert eu.amount("data_residency_eu_uplift") == D("0.00025") + D("0.00015")
    assert (eu.input_cost, eu.output_cost) == (D("0.00275"), D("0.00165"))
    assert breakdown("gpt-5.4", SMALL, data_residency="fedramp").total == D("0.0044")
    # gpt-4o lists only the FedRAMP uplift.
    assert breakdown("gpt-4o", SMALL, data_residency="fedramp").total == D("0.00385")
    plain = breakdown("gpt-4o", SMALL, data_residency="eu")
    assert plain.total == D("0.0035")
    assert "data_residency eu: no uplift for this model" in plain.notes


def test_uplift_applies_on_top_of_a_service_tier() -> None:
    b = breakdown("gpt-5.4", SMALL, data_residency="us", service_tier="priority")
    assert b.total == (D("0.005") + D("0.003")) * D("1.1")


def test_vertex_location_uplift_is_for_every_location_but_global() -> None:
    name = "vertex_ai/claude-sonnet-4-6"
    assert breakdown(name, SMALL, vertex_location="us-east5").total == D("0.00495")
    assert breakdown(name, SMALL, vertex_location="global").total == D("0.0045")


def test_inference_geo_uplift_on_anthropic_but_not_for_batches() -> None:
    assert breakdown("claude-sonnet-4-6", SMALL, inference_geo="us").total == D("0.00495")
    assert breakdown("claude-sonnet-4-6", SMALL, inference_geo="global").total == D("0.0045")
    batch = breakdown("claude-sonnet-4-6", SMALL, inference_geo="us", service_tier="batch")
    assert batch.total == D("0.0015") + D("0.00075")
