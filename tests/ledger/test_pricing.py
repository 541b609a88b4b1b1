"""Cost rules, one by one, worked by hand from the packaged price file (see docs/pricing.md),
then LiteLLM's own numbers replayed from tests/ledger/data/litellm_cost_cases.json."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.catalog import ModelRecord, load_snapshot, snapshot_path
from ledger.exceptions import LedgerError
from ledger.pricing import CostBreakdown, UnpricedUsageError, Usage, calculate_cost, price

CASES = Path(__file__).parent / "data" / "litellm_cost_cases.json"
TOLERANCE = Decimal("1e-12")  # our exact Decimal against LiteLLM's float
D = Decimal


@cache
def _price_map() -> dict[str, dict[str, Any]]:
    return load_snapshot()


@cache
def model(name: str) -> ModelRecord:
    return ModelRecord.from_berriai(name, _price_map()[name])


def cost(name: str, **usage: Any) -> Decimal:
    return calculate_cost(model(name), Usage(**usage))


def breakdown(name: str, **usage: Any) -> CostBreakdown:
    return price(model(name), Usage(**usage))


# -- rule 1: text tokens -----------------------------------------------------------------------


def test_text_input_and_output_tokens() -> None:
    # gpt-4o: input 0.0000025, output 0.00001
    assert cost("gpt-4o", prompt_tokens=1000, completion_tokens=500) == D("0.0075")


def test_result_is_exact_decimal_not_float_rounded() -> None:
    result = cost("gpt-4o", prompt_tokens=3, completion_tokens=7)
    assert isinstance(result, Decimal)
    assert result == D("0.0000075") + D("0.00007")  # 0.1 + 0.2 style noise would fail this


def test_empty_usage_costs_zero() -> None:
    b = breakdown("gpt-4o")
    assert b.total == 0
    assert b.lines == ()
    assert b.unpriced == ()


# -- rule 2: cache tokens are part of prompt_tokens --------------------------------------------


def test_cache_read_and_creation_are_part_of_prompt() -> None:
    # claude-sonnet-4-6: input 0.000003, cache read 3e-7, cache write 0.00000375,
    # 1h write 0.000006, output 0.000015
    b = breakdown(
        "claude-sonnet-4-6",
        prompt_tokens=10_000,
        cache_read_input_tokens=6000,
        cache_creation_input_tokens=3000,
        cache_creation_1h_input_tokens=1000,
        completion_tokens=400,
    )
    assert b.amount("text_input") == D("0.003")  # (10000 - 6000 - 3000) * 0.000003
    assert b.amount("cache_read_input") == D("0.0018")
    assert b.amount("cache_creation_input") == D("0.0075")  # 2000 at the 5-minute rate
    assert b.amount("cache_creation_1h_input") == D("0.006")
    assert b.amount("text_output") == D("0.006")
    assert b.total == D("0.0243")


def test_missing_cache_price_bills_cached_tokens_as_input() -> None:
    # gpt-4o-audio-preview-2024-12-17 publishes no cache-read price
    b = breakdown(
        "gpt-4o-audio-preview-2024-12-17", prompt_tokens=1000, cache_read_input_tokens=400
    )
    assert b.total == D("0.0025")
    (cached,) = (ln for ln in b.lines if ln.component == "cache_read_input")
    assert cached.price_key == "input_cost_per_token"


def test_fireworks_default_cache_read_is_half_the_input_rate() -> None:
    name = "fireworks_ai/accounts/fireworks/models/deepseek-v3"  # input = output = 9e-7
    b = breakdown(name, prompt_tokens=1000, cache_read_input_tokens=400, completion_tokens=100)
    assert b.amount("cache_read_input") == D("0.00018")
    assert b.total == D("0.00054") + D("0.00018") + D("0.00009")


def test_usage_parts_cannot_exceed_their_totals() -> None:
    with pytest.raises(ValidationError):
        Usage(prompt_tokens=10, cache_read_input_tokens=8, cache_creation_input_tokens=3)
    with pytest.raises(ValidationError):
        Usage(completion_tokens=10, reasoning_tokens=11)
    with pytest.raises(ValidationError):
        Usage(prompt_tokens=10, cache_creation_input_tokens=2, cache_creation_1h_input_tokens=3)
    with pytest.raises(ValidationError):
        Usage(input_seconds=1.5)  # floats are refused on purpose


# -- rule 3: reasoning tokens ------------------------------------------------------------------


def test_reasoning_tokens_at_their_own_rate() -> None:
    # dashscope/qwen-plus-2025-04-28: input 4e-7, output 0.0000012, reasoning 0.000004
    b = breakdown(
        "dashscope/qwen-plus-2025-04-28",
        prompt_tokens=2000,
        completion_tokens=3000,
        reasoning_tokens=2500,
    )
    assert b.amount("text_output") == D("0.0006")
    assert b.amount("reasoning_output") == D("0.01")
    assert b.total == D("0.0114")


def test_reasoning_tokens_without_own_rate_bill_as_output() -> None:
    assert cost("gpt-4o", completion_tokens=3000, reasoning_tokens=2500) == D("0.03")


# -- rule 4: long-context tiers ----------------------------------------------------------------


def test_tier_applies_to_whole_request_above_threshold() -> None:
    # gemini-2.5-pro above 200k: input 0.0000025, cache read 2.5e-7, output 0.000015
    b = breakdown(
        "gemini-2.5-pro",
        prompt_tokens=250_000,
        cache_read_input_tokens=100_000,
        completion_tokens=1000,
    )
    assert b.tier == "above_200k_tokens"
    assert b.amount("text_input") == D("0.375")
    assert b.amount("cache_read_input") == D("0.025")
    assert b.amount("text_output") == D("0.015")
    assert b.total == D("0.415")


def test_tier_threshold_itself_is_not_above() -> None:
    b = breakdown("gemini-2.5-pro", prompt_tokens=200_000, completion_tokens=1000)
    assert b.tier is None
    assert b.total == D("0.26")


def test_xai_tier_starts_at_the_threshold() -> None:
    b = breakdown("xai/grok-4.3", prompt_tokens=200_000, completion_tokens=1000)
    assert b.tier == "above_200k_tokens"
    assert b.total == D("0.505")


def test_tiered_pricing_table_picks_one_tier_for_everything() -> None:
    # dashscope/qwen-flash: (0, 256000] 5e-8 / 4e-7; (256000, 1000000] 2.5e-7 / 0.000002
    assert cost("dashscope/qwen-flash", prompt_tokens=256_000, completion_tokens=1000) == D(
        "0.0132"
    )
    assert cost("dashscope/qwen-flash", prompt_tokens=300_000, completion_tokens=1000) == D("0.077")


# -- rule 5: audio -----------------------------------------------------------------------------


def test_audio_tokens_at_audio_rates() -> None:
    # gpt-4o-audio-preview-2024-12-17: text 0.0000025/0.00001, audio 0.00004/0.00008
    b = breakdown(
        "gpt-4o-audio-preview-2024-12-17",
        prompt_tokens=4000,
        audio_input_tokens=1500,
        completion_tokens=800,
        audio_output_tokens=300,
    )
    assert b.amount("text_input") == D("0.00625")
    assert b.amount("audio_input") == D("0.06")
    assert b.amount("text_output") == D("0.005")
    assert b.amount("audio_output") == D("0.024")
    assert b.total == D("0.09525")


def test_audio_without_audio_rate_bills_as_text() -> None:
    assert cost("gpt-4o", prompt_tokens=1000, audio_input_tokens=1000) == D("0.0025")


# -- rules 6-8: images, seconds, characters ----------------------------------------------------


def test_images_per_image() -> None:
    # deep-research-pro-preview-12-2025: input 0.000002, per image 0.0011, output 0.000012
    b = breakdown(
        "deep-research-pro-preview-12-2025", prompt_tokens=1200, images=3, completion_tokens=50
    )
    assert b.amount("images") == D("0.0033")
    assert b.total == D("0.0063")


def test_generated_images_per_output_image() -> None:
    # gemini-3-pro-image-preview: per input image 0.0011, per output image 0.134
    b = breakdown("gemini-3-pro-image-preview", prompt_tokens=0, output_images=3)
    assert b.amount("output_images") == D("0.402") == 3 * D("0.134")
    (line,) = b.lines
    assert (line.component, line.side, line.quantity, line.unit_price, line.price_key) == (
        "output_images", "output", 3, D("0.134"), "output_cost_per_image")
    assert b.output_cost == b.total == D("0.402") and b.complete


def test_input_and_generated_images_are_priced_apart() -> None:
    # 2 input images (0.0011 each) and 1 generated (0.134), 100 prompt tokens (0.000002 each).
    b = breakdown("gemini-3-pro-image-preview", prompt_tokens=100, images=2, output_images=1)
    assert b.amount("images") == D("0.0022")
    assert b.amount("output_images") == D("0.134")
    assert b.input_cost == D("0.0002") + D("0.0022")
    assert b.total == D("0.1364")


def test_model_priced_only_per_output_image() -> None:
    # aiml/dall-e-3: 0.052 per output image and nothing else.
    assert cost("aiml/dall-e-3", output_images=2) == D("0.104")
    assert breakdown("aiml/dall-e-3", images=1).unpriced == ("images",)


def test_seconds_per_second_exactly_as_listed() -> None:
    # azure/gpt-realtime-whisper-2026-05-06: 0.0002833333333333333 per input second
    assert cost("azure/gpt-realtime-whisper-2026-05-06", input_seconds=60) == D(
        "0.016999999999999998"
    )


def test_characters_replace_text_input_tokens() -> None:
    # vertex_ai/gemini-2.0-flash: per character 3.75e-8, output 6e-7
    b = breakdown(
        "vertex_ai/gemini-2.0-flash", prompt_tokens=300, characters=1234, completion_tokens=40
    )
    assert b.amount("text_input") == 0
    assert b.amount("characters") == D("0.000046275")
    assert b.total == D("0.000070275")


# -- rule 9: unpriced is never zero ------------------------------------------------------------


def test_unpriced_units_are_reported_not_zeroed() -> None:
    b = breakdown("gpt-4o", prompt_tokens=10, images=2, input_seconds=D("1.5"))
    assert b.unpriced == ("images", "input_seconds")
    assert not b.complete
    assert b.total == D("0.000025")  # what could be priced
    with pytest.raises(UnpricedUsageError) as caught:
        cost("gpt-4o", prompt_tokens=10, images=2)
    assert caught.value.unpriced == ("images",)
    assert isinstance(caught.value, LedgerError)
    assert isinstance(caught.value, ValueError)


def test_generated_images_without_an_output_image_price_are_unpriced() -> None:
    b = breakdown("gpt-4o", prompt_tokens=10, output_images=1)
    assert b.unpriced == ("output_images",)
    assert b.total == D("0.000025")
    # An input image price is no price for a generated image (deep-research-pro lists one).
    with pytest.raises(UnpricedUsageError) as caught:
        cost("gemini/deep-research-pro-preview-12-2025", prompt_tokens=10, output_images=1)
    assert caught.value.unpriced == ("output_images",)


def test_model_without_token_prices_is_unpriced() -> None:
    b = breakdown("dashscope/qwen-flash", completion_tokens=5)  # no prompt: no table tier
    assert b.unpriced == ("text_output",)


# -- properties --------------------------------------------------------------------------------

_PRICED = [
    name
    for name, entry in json.loads(snapshot_path().read_bytes()).items()
    if entry.get("mode") == "chat" and "input_cost_per_token" in entry
][::25]


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    cache_read = draw(st.integers(0, 300_000))
    cache_write = draw(st.integers(0, 50_000))
    audio_in = draw(st.integers(0, 5000))
    prompt = cache_read + cache_write + audio_in + draw(st.integers(0, 400_000))
    reasoning = draw(st.integers(0, 20_000))
    audio_out = draw(st.integers(0, 2000))
    return Usage(
        prompt_tokens=prompt,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        cache_creation_1h_input_tokens=draw(st.integers(0, cache_write)),
        audio_input_tokens=audio_in,
        completion_tokens=reasoning + audio_out + draw(st.integers(0, 20_000)),
        reasoning_tokens=reasoning,
        audio_output_tokens=audio_out,
    )


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(_PRICED), usage=usages(), extra=st.integers(1, 10_000))
@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_cost_is_exact_nonnegative_and_monotone(name: str, usage: Usage, extra: int) -> None:
    b = price(model(name), usage)
    assert isinstance(b.total, Decimal)
    assert b.total >= 0
    assert all(isinstance(ln.amount, Decimal) and ln.amount >= 0 for ln in b.lines)
    assert b.total == sum((ln.amount for ln in b.lines), D(0))
    assert b.total == b.input_cost + b.output_cost
    # More completion tokens never cost less (prompt growth may cross a tier, which is
    # also never cheaper for text-only usage, checked below).
    more_out = usage.model_copy(update={"completion_tokens": usage.completion_tokens + extra})
    assert price(model(name), more_out).total >= b.total


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(_PRICED), prompt=st.integers(0, 600_000), extra=st.integers(1, 10**5))
def test_text_prompt_cost_is_monotone(name: str, prompt: int, extra: int) -> None:
    low = price(model(name), Usage(prompt_tokens=prompt, completion_tokens=100))
    high = price(model(name), Usage(prompt_tokens=prompt + extra, completion_tokens=100))
    assert high.total >= low.total


# -- the standard: LiteLLM's own cost_per_token ------------------------------------------------


@cache
def _litellm_cases() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(CASES.read_text())
    return document


def test_fixture_matches_packaged_snapshot() -> None:
    document = _litellm_cases()
    assert document["snapshot_sha256"] == hashlib.sha256(snapshot_path().read_bytes()).hexdigest()
    assert document["case_count"] == sum(len(m["cases"]) for m in document["models"])
    assert document["case_count"] >= 30_000


def test_fixture_covers_every_chat_and_embedding_model() -> None:
    document = _litellm_cases()
    wanted = {
        name
        for name, entry in _price_map().items()
        if isinstance(entry, dict) and entry.get("mode") in ("chat", "embedding")
    }
    covered = {m["model"] for m in document["models"]}
    # Only models LiteLLM prices from another entry with other prices are left out.
    assert wanted - covered == set(document["skipped"]) & wanted
    assert len(wanted - covered) <= 3


def _conditions(context: dict[str, str]) -> dict[str, Any]:
    at = datetime.fromisoformat(context["at"].replace("Z", "+00:00"))
    return {**{k: v for k, v in context.items() if k != "at"}, "at": at}


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_agrees_with_litellm_cost_per_token() -> None:
    """Every case LiteLLM answered: service tiers, batch, off-peak moments, uplifts."""
    document = _litellm_cases()
    contexts = [_conditions(c) for c in document["contexts"]]
    failures: list[str] = []
    worst = D(0)
    checked = 0
    for case in document["models"]:
        record = model(case["model"])
        usages = [Usage(**u) for u in case["usages"]]
        for usage_index, context_index, prompt_cost, completion_cost in case["cases"]:
            b = price(record, usages[usage_index], **contexts[context_index])
            expected_in, expected_out = D(prompt_cost), D(completion_cost)
            diff = max(abs(b.input_cost - expected_in), abs(b.output_cost - expected_out))
            worst = max(worst, diff)
            checked += 1
            if diff > TOLERANCE:
                failures.append(
                    f"{case['model']} {case['usages'][usage_index]} "
                    f"{document['contexts'][context_index]}: ours {b.input_cost}/"
                    f"{b.output_cost} litellm {expected_in}/{expected_out}"
                )
    assert not failures, f"{len(failures)} of {checked} differ:\n" + "\n".join(failures[:20])
    assert checked == document["case_count"]
    assert worst <= TOLERANCE
