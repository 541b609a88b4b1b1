"""Event models: validation, ApiKeyUpdated semantics, decode errors, upcasting, keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from ledger.codec import dump_event, parse_event
from ledger.events import (
    CURRENT_VERSIONS,
    EVENT_TYPES,
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyUpdated,
    ModelAliasSet,
    ModelUpserted,
    UsageRecorded,
)
from ledger.exceptions import (
    EventDecodeError,
    UnknownEventTypeError,
    UnsupportedSchemaVersionError,
)
from ledger.keys import generate_key, hash_key, is_key_hash
from ledger.producer.builders import EventBuilder, create_key, update_key, usage
from ledger.routing import Topics, event_headers, partition_key, topic_for
from ledger.settings import Settings

KEY_ID = UUID("3f1c2a8e-5b7d-4e09-9a41-6c2f0d8b7e15")
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def usage_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": str(uuid4()),
        "type": "usage.recorded",
        "schema_version": 4,
        "occurred_at": "2026-11-25T09:30:00Z",
        "source": "gw",
        "api_key_id": str(KEY_ID),
        "request_id": "r-1",
        "model": "gpt-4o",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "status": "success",
    }
    fields.update(overrides)
    return fields


BAD_USAGE_INPUT = [
    pytest.param({"prompt_tokens": "ten"}, "prompt_tokens", id="wrong-type"),
    pytest.param({"completion_tokens": -1}, "completion_tokens", id="negative-count"),
    pytest.param({"images": -3}, "images", id="negative-images"),
    pytest.param({"input_seconds": "-0.5"}, "input_seconds", id="negative-seconds"),
    pytest.param({"cost_usd": "-0.01"}, "cost_usd", id="negative-cost"),
    pytest.param({"cost_usd": "NaN"}, "cost_usd", id="nan-cost"),
    pytest.param({"occurred_at": "2026-11-25T09:30:00"}, "occurred_at", id="naive-timestamp"),
    pytest.param({"request_id": ""}, "request_id", id="empty-request-id"),
    pytest.param({"source": ""}, "source", id="empty-source"),
    pytest.param({"model": ""}, "model", id="empty-model"),
    pytest.param({"api_key_id": "not-a-uuid"}, "api_key_id", id="bad-uuid"),
    pytest.param({"status": "partial"}, "status", id="unknown-status"),
    pytest.param({"metadata": {f"k{i}": "v" for i in range(33)}}, "metadata", id="too-many"),
    pytest.param({"metadata": {"k" * 65: "v"}}, "metadata", id="metadata-key-too-long"),
    pytest.param({"metadata": {"k": "v" * 513}}, "metadata", id="metadata-value-too-long"),
    pytest.param({"metadata": {"k": 1}}, "metadata", id="metadata-not-string"),
    pytest.param({"surprise": 1}, "surprise", id="unknown-field"),
]


@pytest.mark.parametrize(("override", "field"), BAD_USAGE_INPUT)
def test_bad_usage_input_names_the_field(override: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UsageRecorded.model_validate(usage_fields(**override))
    assert field in {str(part) for error in caught.value.errors() for part in error["loc"]}


@pytest.mark.parametrize(("override", "field"), BAD_USAGE_INPUT)
def test_parse_event_reports_bad_input_as_decode_error(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        parse_event(json.dumps(usage_fields(**override)).encode())
    assert type(caught.value) is EventDecodeError
    assert field in str(caught.value)


def test_builders_validate_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError, match="prompt_tokens"):
        usage(api_key_id=KEY_ID, request_id="r", model="m", prompt_tokens=-1, completion_tokens=0)
    with pytest.raises(ValidationError, match="occurred_at"):
        EventBuilder("gw").revoke_key(api_key_id=KEY_ID, occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="key_hash"):
        create_key(name="k", key_hash="ABC")


def test_frozen_and_round_trip() -> None:
    event = usage(
        api_key_id=KEY_ID,
        request_id="r",
        model="m",
        prompt_tokens=1,
        completion_tokens=2,
        cost_usd=Decimal("0.10"),
        metadata={"team": "a"},
    )
    with pytest.raises(ValidationError):
        event.model = "other"  # type: ignore[misc]
    data = dump_event(event)
    assert b" " not in data.replace(b'"gateway"', b"")  # compact
    assert json.loads(data)["cost_usd"] == "0.10"  # money as a string, never a float
    assert parse_event(data) == event


def test_the_key_partition_key_is_the_key_id_as_text_past_its_cache_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ledger import events

    monkeypatch.setattr(events, "_KEY_TEXT", {})
    monkeypatch.setattr(events, "_KEY_TEXT_MAX", 3)
    ids = [uuid4() for _ in range(7)]
    for key_id in ids + ids[::-1] + [str(i).upper() for i in ids]:
        revoked = ApiKeyRevoked(event_id=uuid4(), occurred_at=NOW, source="s",
                                api_key_id=key_id)
        assert revoked.partition_key() == str(UUID(str(key_id)))
    assert len(events._KEY_TEXT) <= 3


def test_routing_keys_and_headers() -> None:
    topics = Topics("u", "k", "c")
    event = usage(
        api_key_id=KEY_ID, request_id="r", model="m", prompt_tokens=1, completion_tokens=1
    )
    assert topic_for(event, topics) == "u"
    assert partition_key(event) == str(KEY_ID).encode()
    assert event_headers(event) == [("type", b"usage.recorded"), ("schema_version", b"4")]
    alias = ModelAliasSet(
        event_id=uuid4(), occurred_at=NOW, source="s", alias="fast", model="gpt-4o"
    )
    assert topic_for(alias, topics) == "c"
    assert partition_key(alias) == b"fast"
    key_event = create_key(name="k", plaintext_key="sk-led-x", api_key_id=KEY_ID)
    assert topic_for(key_event, topics) == "k"
    assert partition_key(key_event) == str(KEY_ID).encode()
    budget = EventBuilder("t").set_budget(scope="owner:team-a", limit_usd="5", period="day")
    assert topic_for(budget, topics) == "k"
    assert partition_key(budget) == b"owner:team-a"  # one scope's history stays in order
    assert set(EVENT_TYPES) == set(CURRENT_VERSIONS)
    assert len(EVENT_TYPES) == 15


def test_api_key_updated_carries_only_set_fields() -> None:
    update = update_key(api_key_id=KEY_ID, max_budget_usd=None, name="renamed")
    assert update.changes() == {"max_budget_usd": None, "name": "renamed"}
    body = json.loads(dump_event(update))
    assert body["max_budget_usd"] is None  # explicit null clears the budget
    assert "owner" not in body
    assert "enabled" not in body
    assert body["type"] == "api_key.updated"
    assert body["schema_version"] == 1
    decoded = parse_event(dump_event(update))
    assert isinstance(decoded, ApiKeyUpdated)
    assert decoded.changes() == update.changes()


def test_api_key_updated_rejects_null_for_non_nullable_fields() -> None:
    with pytest.raises(ValidationError, match="name"):
        ApiKeyUpdated(event_id=uuid4(), occurred_at=NOW, source="s", api_key_id=KEY_ID, name=None)
    with pytest.raises(ValueError, match="at least one"):
        update_key(api_key_id=KEY_ID)


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        parse_event(json.dumps(usage_fields(type="usage.forecast")).encode())
    assert caught.value.reason == "unknown_type"
    assert not caught.value.retriable


def test_newer_schema_version_is_its_own_error() -> None:
    with pytest.raises(UnsupportedSchemaVersionError) as caught:
        parse_event(json.dumps(usage_fields(schema_version=5)).encode())
    assert caught.value.version == 5
    assert caught.value.current == 4
    assert caught.value.reason == "unsupported_schema_version"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"", b'{"type": "usage.recorded"}'],
)
def test_garbage_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(EventDecodeError):
        parse_event(raw)


def test_usage_recorded_v1_is_upcast_to_the_current_version() -> None:
    v1: dict[str, Any] = {
        "event_id": "8d3e4f10-0000-4000-8000-000000000101",
        "type": "usage.recorded",
        "schema_version": 1,
        "occurred_at": "2025-03-02T17:04:11Z",
        "source": "gateway-eu-1",
        "api_key_id": str(KEY_ID),
        "request_id": "req-1",
        "model": "gpt-4o",
        "tokens_in": 900,
        "tokens_out": 120,
        "status": "success",
        "cost": "0.0021",
    }
    event = parse_event(json.dumps(v1).encode())
    assert isinstance(event, UsageRecorded)
    assert event.schema_version == 4
    assert (event.prompt_tokens, event.completion_tokens) == (900, 120)
    assert event.cost_usd == Decimal("0.0021")
    assert event.cache_read_input_tokens == 0
    assert event.event_id == UUID(v1["event_id"])  # dedup survives the upcast
    # A v1 message with a v1 violation is still reported against the field.
    with pytest.raises(EventDecodeError, match="prompt_tokens"):
        parse_event(json.dumps({**v1, "tokens_in": -5}).encode())
    # v2 field names under version 1 are not silently accepted.
    with pytest.raises(EventDecodeError):
        parse_event(json.dumps(usage_fields(schema_version=1)).encode())


def test_usage_recorded_v2_is_upcast_served_at_standard_rates() -> None:
    v2 = usage_fields(schema_version=2, cost_usd=None)
    event = parse_event(json.dumps(v2).encode())
    assert isinstance(event, UsageRecorded)
    assert event.schema_version == 4
    assert event.event_id == UUID(v2["event_id"])
    served = (event.service_tier, event.data_residency, event.vertex_location,
              event.inference_geo)  # fmt: skip
    assert served == (None, None, None, None)
    # v3 fields under version 2 are not silently accepted.
    with pytest.raises(EventDecodeError, match="service_tier"):
        parse_event(json.dumps({**v2, "service_tier": "priority"}).encode())


def test_usage_recorded_v3_says_how_the_request_was_served() -> None:
    served = {"service_tier": "priority", "data_residency": "eu",
              "vertex_location": "europe-west1", "inference_geo": "us"}  # fmt: skip
    event = parse_event(json.dumps(usage_fields(**served)).encode())
    assert isinstance(event, UsageRecorded)
    assert {name: getattr(event, name) for name in served} == served
    assert parse_event(dump_event(event)) == event
    built = usage(api_key_id=KEY_ID, request_id="r", model="gpt-4o", prompt_tokens=1,
                  completion_tokens=1, service_tier="batch", data_residency="fedramp")  # fmt: skip
    assert (built.service_tier, built.data_residency) == ("batch", "fedramp")
    for field, bad in [("service_tier", "prority"), ("service_tier", "standard"),
                       ("data_residency", "asia"), ("vertex_location", ""),
                       ("inference_geo", "x" * 513)]:  # fmt: skip
        with pytest.raises(EventDecodeError, match=field):
            parse_event(json.dumps(usage_fields(**{field: bad})).encode())


def test_usage_recorded_v3_is_upcast_to_v4_with_no_generated_images() -> None:
    # A v3 event with images: they were input images (what v3's `images` always meant).
    v3 = usage_fields(schema_version=3, images=2, service_tier="priority")
    event = parse_event(json.dumps(v3).encode())
    assert isinstance(event, UsageRecorded)
    assert event.schema_version == 4
    assert (event.images, event.output_images) == (2, 0)
    assert event.service_tier == "priority"
    assert event.event_id == UUID(v3["event_id"])
    # The v4 field under version 3 is not silently accepted.
    with pytest.raises(EventDecodeError, match="output_images"):
        parse_event(json.dumps({**v3, "output_images": 1}).encode())


def test_usage_recorded_v4_counts_generated_images_apart_from_input_images() -> None:
    event = parse_event(json.dumps(usage_fields(images=1, output_images=4)).encode())
    assert isinstance(event, UsageRecorded)
    assert (event.images, event.output_images) == (1, 4)
    assert parse_event(dump_event(event)) == event
    assert usage_fields()["schema_version"] == UsageRecorded.model_fields[
        "schema_version"].default == 4
    built = usage(api_key_id=KEY_ID, request_id="r", model="dall-e-3", prompt_tokens=0,
                  completion_tokens=0, output_images=3)  # fmt: skip
    assert (built.images, built.output_images) == (0, 3)
    for bad in (-1, 10**9 + 1, 1.5, "2", True):
        with pytest.raises(EventDecodeError, match="output_images"):
            parse_event(json.dumps(usage_fields(output_images=bad)).encode())


def test_model_upserted_keeps_raw_whole() -> None:
    raw = {"input_cost_per_token": 1.5e-07, "mode": "chat", "nested": {"a": [1, 2]}}
    event = ModelUpserted(
        event_id=uuid4(), occurred_at=NOW, source="s", name="m", raw=raw, valid_from=NOW
    )
    decoded = parse_event(dump_event(event))
    assert isinstance(decoded, ModelUpserted)
    assert decoded.raw == raw


def test_free_json_keeps_numbers_as_numbers_without_changing_them() -> None:
    raw = {
        "input_cost_per_token": Decimal("0.0000025"),
        "tiers": [Decimal("1.10"), Decimal("0.12345678901234567890")],
        "max_tokens": 128000,
    }
    event = ModelUpserted(
        event_id=uuid4(), occurred_at=NOW, source="s", name="m", raw=raw, valid_from=NOW
    )
    wire = json.loads(dump_event(event), parse_float=Decimal)["raw"]
    assert wire["input_cost_per_token"] == Decimal("0.0000025")  # a JSON number, same value
    assert wire["tiers"][0] == Decimal("1.1")
    # More digits than a float carries: kept exact, as a string.
    assert wire["tiers"][1] == "0.12345678901234567890"
    assert wire["max_tokens"] == 128000


def test_key_hashing() -> None:
    plaintext = generate_key()
    assert plaintext.startswith("sk-led-")
    assert len(plaintext) > 40
    assert generate_key() != plaintext
    digest = hash_key(plaintext)
    assert is_key_hash(digest)
    assert digest == hash_key(plaintext)
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(ValueError, match="empty"):
        hash_key("")
    created = create_key(name="k", plaintext_key=plaintext)
    assert isinstance(created, ApiKeyCreated)
    assert plaintext.encode() not in dump_event(created)
    assert created.key_hash == digest


def test_topics_come_from_the_settings_and_default_as_they_do() -> None:
    configured = Settings.model_construct(topic_usage="u", topic_keys="k", topic_catalog="c")
    assert Topics.from_settings(configured) == Topics("u", "k", "c")
    defaults = Settings.model_construct()
    assert Topics.from_settings(defaults) == Topics() == Topics(
        defaults.topic_usage, defaults.topic_keys, defaults.topic_catalog)
