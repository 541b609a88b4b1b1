"""PlanCache (the projector's pricing: plans resolved once, arithmetic per request) against
``ledger.pricing.price``, the defining function: the same Decimal, digit for digit and exponent
for exponent, on every model of the packaged price map."""

from __future__ import annotations

from decimal import Decimal, Inexact
from typing import Any

import pytest
from pydantic import ValidationError

from ledger.catalog import ModelRecord
from ledger.pricing import Usage, checked_counts, price, usage_counts
from ledger.pricing_plan import PlanCache
from tests.ledger.pricing_cases import Case, cases, records

D = Decimal


def _by_price(case: Case) -> tuple[str, Any]:
    try:
        breakdown = price(case.model, Usage(**case.usage_fields()), **case.conditions)
    except Exception as exc:  # compared with what the fast path raises
        return "raised", type(exc)
    return "total", None if breakdown.unpriced else breakdown.total


def _by_plan(plans: PlanCache, case: Case) -> tuple[str, Any]:
    try:
        return "total", plans.total(case.model, checked_counts(case.counts), **case.conditions)
    except Exception as exc:
        return "raised", type(exc)


def _same(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    # Decimal("0.0075") == Decimal("0.00750"): equal is not enough, the digits must match.
    if isinstance(left[1], Decimal) and isinstance(right[1], Decimal):
        return left[1].as_tuple() == right[1].as_tuple()
    return left == right


def test_plan_cache_prices_every_model_of_the_snapshot_as_price_does() -> None:
    plans = PlanCache()
    seen = differ = 0
    examples = []
    kinds: set[object] = set()
    for case in cases():
        expected, got = _by_price(case), _by_plan(plans, case)
        seen += 1
        kinds.add(expected[0] if expected[1] is not None else "unpriced")
        if not _same(expected, got):
            differ += 1
            if len(examples) < 5:
                examples.append((case.model.name, case.conditions, case.counts, expected, got))
    assert differ == 0, examples
    assert seen > 50_000
    # The cases reach priced, unpriced and overflowing requests alike.
    assert kinds == {"total", "unpriced", "raised"}


def test_counts_too_large_for_exact_arithmetic_raise_inexact_on_both_paths() -> None:
    model = next(m for m in records() if m.name == "gpt-4o")
    counts = (10**199 + 7, 10**199, 0, 0, 0, 0, 0, 0, 0, 0, D(0), D(0), 0)
    with pytest.raises(Inexact):
        price(model, Usage(prompt_tokens=10**199 + 7, completion_tokens=10**199))
    with pytest.raises(Inexact):
        PlanCache().total(model, counts)


def test_amounts_are_summed_in_line_order_so_the_same_addition_overflows() -> None:
    # 10**199 + 0.5 needs 201 digits; 10**199 + (0.5 + 0.5) does not. price() sums its lines
    # in order, so the first addition raises, and so must the fast path's.
    model = ModelRecord.from_berriai("m", {"input_cost_per_token": 1, "output_cost_per_token": 0.5,
                                           "output_cost_per_reasoning_token": 0.5})
    usage = Usage(prompt_tokens=10**199, completion_tokens=2, reasoning_tokens=1)
    with pytest.raises(Inexact):
        price(model, usage)
    with pytest.raises(Inexact):
        PlanCache().total(model, usage_counts(usage))


def test_a_plan_is_reused_within_a_prompt_bucket_and_not_across_one() -> None:
    model = next(m for m in records() if m.name == "gemini/gemini-exp-1206")  # above 128k
    plans = PlanCache()
    small = plans.plan(model, 1000)
    assert plans.plan(model, 127_999) is small and small.tier is None
    # At the threshold: its own bucket (xAI bills the tier there), standard rates here.
    at = plans.plan(model, 128_000)
    assert at is not small and at.tier is None
    large = plans.plan(model, 128_001)
    assert large is not small and large.tier == "above_128k_tokens"
    assert plans.plan(model, 2_000_000) is large
    assert plans.plan(model, 0) is not small  # no prompt at all is a bucket of its own
    assert len(plans) == 4


def test_records_are_told_apart_by_identity_and_the_cache_stays_bounded() -> None:
    plans = PlanCache(max_plans=3)
    entry = {"litellm_provider": "openai", "input_cost_per_token": 1e-06}
    counts = (1000, 0, 0, 0, 0, 0, 0, 0, 0, 0, D(0), D(0), 0)
    totals = []
    for step in range(10):
        # Same name, another price each time: a record per price-history row.
        model = ModelRecord.from_berriai("m", dict(entry, input_cost_per_token=(step + 1) / 1e6))
        totals.append(plans.total(model, counts))
        assert len(plans) <= 3
    assert totals == [D(1000) * D(f"{step + 1}E-6") for step in range(10)]


@pytest.mark.parametrize("seconds", [
    D(0), D("0.000"), D("0E+50"), D("0E-60"), D("-0"), D("0E+1000"), D("1.5"), D("1E-9"),
    D("1234567890.123456789"), D("1E+50"), D("NaN"), D("-1"), D("Infinity"),
])  # fmt: skip
def test_checked_counts_accepts_and_refuses_what_usage_does(seconds: Decimal) -> None:
    counts = (10, 5, 2, 1, 1, 3, 0, 0, 0, 0, seconds, seconds, 0)
    try:
        usage: Usage | None = Usage(**dict(zip(Usage.model_fields, counts, strict=True)))
    except ValidationError:
        usage = None
    if usage is None:
        with pytest.raises(ValidationError):
            checked_counts(counts)
    else:
        checked = checked_counts(counts)
        assert [repr(v) for v in checked] == [repr(v) for v in usage_counts(usage)]


@pytest.mark.parametrize("counts", [
    (10, 5, 8, 3, 0, 0, 0, 0, 0, 0, D(0), D(0), 0),  # cache parts above the prompt
    (10, 5, 0, 3, 4, 0, 0, 0, 0, 0, D(0), D(0), 0),  # 1h writes above all writes
    (10, 5, 0, 0, 0, 4, 0, 2, 0, 0, D(0), D(0), 0),  # reasoning + audio above the completion
    (10, -1, 0, 0, 0, 0, 0, 0, 0, 0, D(0), D(0), 0),  # negative
    (10, 5, 0, 0, 0, 0, 0, 0, 0, 0, D(0), D(0), -3),  # negative characters
    (10, 5.5, 0, 0, 0, 0, 0, 0, 0, 0, D(0), D(0), 0),  # a fractional count
    (10, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, D(0), 0),  # float seconds
])  # fmt: skip
def test_checked_counts_refuses_what_usage_refuses(counts: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError):
        Usage(**dict(zip(Usage.model_fields, counts, strict=True)))
    with pytest.raises(ValidationError):
        checked_counts(counts)  # type: ignore[arg-type]


def test_checked_counts_takes_what_usage_coerces_as_usage_has_it() -> None:
    counts = (10, 5.0, 0, 0, 0, 0, 0, 0, 0, 0, "1.5", D(0), 0)  # Usage takes 5.0 as 5
    assert checked_counts(counts) == (10, 5, 0, 0, 0, 0, 0, 0, 0, 0, D("1.5"), D(0), 0)  # type: ignore[arg-type]
