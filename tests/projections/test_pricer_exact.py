"""The projector's per-event pricing (cached plans, arithmetic per event) gives what pricing
each event with ``ledger.pricing.price`` gives: the same cost, digit for digit, and the same
``cost_source``, on generated events over every model of the packaged price map (and events
whose counts are inconsistent, which stay unpriced)."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ledger.catalog import ModelRecord
from ledger.events import UsageRecorded
from projections.pricer import CATALOG, UNPRICED, CatalogPricer
from tests.ledger.pricing_cases import COUNT_FIELDS, cases, reference_cost

_NOON = datetime(2026, 3, 4, 12, tzinfo=UTC)


def _outcome(
    pricing: Callable[[ModelRecord, UsageRecorded], tuple[Decimal | None, str]],
    record: ModelRecord, event: UsageRecorded,
) -> tuple[str, Any, Any]:  # fmt: skip
    try:
        cost, source = pricing(record, event)
    except Exception as exc:  # what one event raises is compared too
        return "raised", type(exc), None
    return source, None if cost is None else cost.as_tuple(), cost


def test_projector_prices_every_model_as_price_does() -> None:
    rng = random.Random(15)
    pricer = CatalogPricer()
    checked = 0
    sources: set[str] = set()
    differ = []
    # Every fifth case (test_pricing_plan.py prices all of them): ~12,000 events.
    for case in itertools.islice(cases(seed=16, huge=10**9), 0, None, 5):
        counts: dict[str, Any] = {
            name: value for name, value in zip(COUNT_FIELDS, case.counts, strict=True) if name
        }
        if rng.random() < 0.05:  # a gateway's inconsistent counts
            counts["reasoning_tokens"] = counts["completion_tokens"] + 1
        conditions = dict(case.conditions)
        event = UsageRecorded.model_construct(
            event_id=uuid.uuid4(), occurred_at=conditions.pop("at") or _NOON, source="test",
            request_id="r", api_key_id=uuid.uuid4(), model=case.model.name, status="success",
            cost_usd=None, **counts, **conditions,
        )  # fmt: skip
        expected = _outcome(reference_cost, case.model, event)
        got = _outcome(pricer._price, case.model, event)
        checked += 1
        sources.add(expected[0])
        if expected[:2] != got[:2] and len(differ) < 5:
            differ.append((case.model.name, case.conditions, counts, expected, got))
    assert differ == []
    assert checked > 10_000
    assert sources == {CATALOG, UNPRICED, "raised"}
