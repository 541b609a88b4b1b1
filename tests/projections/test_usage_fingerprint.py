"""The usage projection's per-event helpers: the fast fingerprint equals its definition; months."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.events import UsageRecorded
from projections.usage import _V3_NULLS, _V3_VERSION, fingerprint, fingerprint_by_definition

# Strings that spell the bytes the fast path cuts, to show a value cannot be mistaken for them.
_TRAPS = st.sampled_from([
    _V3_NULLS.decode(), _V3_VERSION.decode(), '"schema_version":3,', '"service_tier":null',
    '\\",\\"service_tier\\":null', ',"output_images":0', '"schema_version":4', "ü€😀",
    "hold_id", ',"hold_id":', ',"hold_id":null}',
])
_TEXT = st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40), _TRAPS)
_METADATA = st.dictionaries(_TEXT, _TEXT, max_size=4)
_TIER = st.one_of(st.none(), st.sampled_from(["priority", "flex", "batch"]))
_REGION = st.one_of(st.none(), st.sampled_from(["us", "eu"]))


@settings(max_examples=300, deadline=None)
@given(request_id=_TEXT, model=_TEXT.filter(bool), metadata=_METADATA, tier=_TIER,
       residency=_REGION, geo=_REGION, error_code=st.one_of(st.none(), _TEXT),
       hold_id=st.one_of(st.none(), _TEXT), output_images=st.sampled_from([0, 0, 1, 7]))
def test_fast_fingerprint_equals_its_definition(
    request_id: str, model: str, metadata: dict[str, str], tier: str | None,
    residency: str | None, geo: str | None, error_code: str | None, hold_id: str | None,
    output_images: int,
) -> None:
    try:
        event = UsageRecorded(
            event_id=uuid.uuid4(), occurred_at=datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
            source="test", request_id=request_id or "r", api_key_id=uuid.uuid4(), model=model,
            provider="openai", prompt_tokens=10, completion_tokens=5, status="success",
            error_code=error_code, cost_usd=Decimal("0.001"), metadata=metadata,
            service_tier=tier, data_residency=residency, inference_geo=geo, hold_id=hold_id,
            output_images=output_images)
    except ValidationError:
        assume(False)  # not an event the decoder would pass; nothing to fingerprint
        return
    assert fingerprint(event) == fingerprint_by_definition(event)


def test_a_batch_months_are_the_utc_months_of_its_events() -> None:
    from projections.base import Envelope
    from projections.usage import _months, month_start

    def at(text: str) -> Envelope:
        event = UsageRecorded(
            event_id=uuid.uuid4(), occurred_at=datetime.fromisoformat(text), source="t",
            request_id="r", api_key_id=uuid.uuid4(), model="m", provider="openai",
            prompt_tokens=1, completion_tokens=1, status="success")
        return Envelope("usage", 0, 0, None, event)

    batch = [at("2026-11-30T23:30:00-02:00"), at("2026-11-01T00:00:00+00:00"),
             at("2026-11-01T00:30:00+01:00"), at("2026-11-15T12:00:00+00:00")]
    assert _months(batch) == {datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
                              datetime(2026, 10, 1, tzinfo=UTC)}
    assert _months(batch) == {month_start(e.event.occurred_at) for e in batch}


# The v3 example of docs/events.md as v3 code projected it: its digests below are what the
# v3 projector stored (computed with that code), with and without the v3 fields.
_V3_EVENT = {
    "event_id": "8d3e4f10-0000-4000-8000-000000000001", "type": "usage.recorded",
    "schema_version": 3, "occurred_at": "2026-11-25T09:30:00.123000Z", "source": "gateway-eu-1",
    "api_key_id": "3f1c2a8e-5b7d-4e09-9a41-6c2f0d8b7e15", "request_id": "req_01JD4Q9X7G",
    "model": "gpt-4o-mini", "requested_model": "fast", "provider": "openai",
    "prompt_tokens": 1200, "completion_tokens": 350, "cache_read_input_tokens": 1024,
    "images": 2, "service_tier": "priority", "data_residency": "eu", "latency_ms": 842,
    "status": "success", "cost_usd": "0.000389", "metadata": {"team": "search", "env": "prod"},
}  # fmt: skip


def test_a_v3_event_keeps_its_fingerprint_after_the_v4_upgrade() -> None:
    """A copy of an event projected by v3 code, re-sent after the upgrade (upcast, or sent as
    v4 with no generated images), is a duplicate, not a conflicting event."""
    from ledger.codec import parse_event

    served = parse_event(json.dumps(_V3_EVENT).encode())
    standard = parse_event(json.dumps(
        {**_V3_EVENT, "service_tier": None, "data_residency": None}).encode())
    assert isinstance(served, UsageRecorded) and isinstance(standard, UsageRecorded)
    assert served.schema_version == 4 and served.output_images == 0
    assert fingerprint(served).hex() == "f19130daff65f27cd123792f30a8489c"
    assert fingerprint(standard).hex() == "24ae5eecc1d8d8d5c0bde14faaa32219"
    as_v4 = parse_event(json.dumps({**_V3_EVENT, "schema_version": 4}).encode())
    assert fingerprint(as_v4) == fingerprint(served)
    # Generated images are something v3 could not say: another event.
    for event in (served, standard):
        generated = event.model_copy(update={"output_images": 1})
        assert fingerprint(generated) != fingerprint(event)
        assert fingerprint(generated) == fingerprint_by_definition(generated)
