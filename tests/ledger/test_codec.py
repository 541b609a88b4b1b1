"""dump_usage writes a UsageRecorded from its fields' values by type: byte for byte what the
model serializer writes, which every reader and the projector's fingerprint are built on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codec import dump_event, dump_usage, parse_event
from ledger.events import UsageRecorded
from ledger.producer.sending import route_table
from ledger.routing import Topics
from tests.ledger.wire_strategies import encode, valid_events

PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _model_bytes(event: UsageRecorded) -> bytes:
    return event.__pydantic_serializer__.to_json(event)


@PROPERTY
@given(valid_events("usage.recorded"))
def test_usage_from_the_wire_is_written_as_the_model_writes_it(body: dict[str, Any]) -> None:
    event = parse_event(encode(body, ascii_only=False, indent=None))
    assert isinstance(event, UsageRecorded)
    assert dump_usage(event) == dump_event(event) == _model_bytes(event)


# What a Python caller may hand over instead of wire text: Decimals of any spelling the
# writer accepts, aware datetimes at any whole-minute offset, UUID objects.
_MONEY = st.one_of(
    st.decimals(min_value=0, max_value=10**9, places=12, allow_nan=False),
    st.sampled_from([Decimal("1.50"), Decimal("1E-7"), Decimal("0E-10"), Decimal("1E+2"),
                     Decimal("0.000389"), Decimal(10**9)]))
_OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
_MOMENTS = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30),
                        timezones=st.one_of(st.just(UTC), _OFFSETS))


@PROPERTY
@given(cost=st.none() | _MONEY, seconds=_MONEY, occurred_at=_MOMENTS,
       text=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                    max_size=40),
       count=st.integers(0, 10**9))
def test_usage_built_in_python_is_written_as_the_model_writes_it(
    cost: Decimal | None, seconds: Decimal, occurred_at: datetime, text: str, count: int
) -> None:
    event = UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=occurred_at, source=text, api_key_id=uuid.uuid4(),
        request_id=text, model=text, prompt_tokens=count, completion_tokens=0,
        input_seconds=seconds, status="success", cost_usd=cost, latency_ms=count,
        service_tier="flex", metadata={"k": text, "empty": ""}, hold_id=text)
    assert dump_usage(event) == _model_bytes(event)


def test_the_producer_writes_usage_through_dump_usage() -> None:
    assert route_table(Topics())[UsageRecorded][2] is dump_usage
