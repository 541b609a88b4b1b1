"""usage.recorded v3 has a route of its own to v4 (ledger.upcasting._usage_recorded_v3): it
must answer as the general dict route does, for every v3 message the generators make."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.events import EVENT_ADAPTER
from ledger.exceptions import EventDecodeError
from ledger.upcasting import _usage_recorded_v3, decode_by_dict
from tests.ledger.wire_strategies import bodies


@st.composite
def v3_bodies(draw: st.DrawFn) -> bytes:
    """usage.recorded bodies (valid and mutated) rewritten as version 3 would send them."""
    body = draw(bodies("usage.recorded"))
    try:
        value: Any = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict):
        if draw(st.integers(0, 9)):  # mostly without output_images, as v3 wrote
            value.pop("output_images", None)
        if draw(st.integers(0, 9)):
            value["schema_version"] = 3
    # A lone surrogate in a value becomes bytes that are not UTF-8: a body to refuse too.
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def _by_dict(body: bytes) -> Any:
    try:
        EVENT_ADAPTER.validate_json(body)
    except ValidationError as fast_error:
        try:
            return decode_by_dict(body, fast_error)
        except EventDecodeError:
            return None
    raise AssertionError(f"a v3 body passed the current models: {body!r}")


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(v3_bodies())
@example(b'{"event_id": "e3e70682-c209-4cac-629f-6fbed82c07cd", "schema_version": 3, '
         b'"occurred_at": "2000-01-01T00:00:00Z", "source": "usage.recorded", '
         b'"api_key_id": "f728b4fa-4248-5e3a-0a5d-2f346baa9455", "request_id": "0", '
         b'"model": "0", "prompt_tokens": 0, "completion_tokens": 0, "status": "success"}')
def test_the_v3_route_answers_as_the_dict_route(body: bytes) -> None:
    ours = _usage_recorded_v3(body)  # found by CI: a body without "type" was taken as usage
    if ours is None:
        return  # the dict route reads it (or refuses it, wording the error)
    theirs = _by_dict(body)
    assert theirs is not None, body
    assert ours == theirs and ours.model_fields_set == theirs.model_fields_set, body
    assert ours.schema_version == 4 and ours.output_images == 0


def test_the_v3_route_takes_the_documented_example() -> None:
    body = json.dumps({
        "event_id": "8d3e4f10-0000-4000-8000-000000000103", "type": "usage.recorded",
        "schema_version": 3, "occurred_at": "2026-10-14T08:12:00Z", "source": "gw",
        "api_key_id": "3f1c2a8e-5b7d-4e09-9a41-6c2f0d8b7e15", "request_id": "r",
        "model": "gpt-4o", "prompt_tokens": 1105, "completion_tokens": 12,
        "status": "success", "service_tier": "priority"}).encode()
    ours = _usage_recorded_v3(body)
    assert ours is not None and ours == _by_dict(body)
    # A v3 message carrying v4's field is not v3: refused, by the dict route's rule.
    carrying = body.replace(b'"status"', b'"output_images": 1, "status"')
    assert _usage_recorded_v3(carrying) is None and _by_dict(carrying) is None
