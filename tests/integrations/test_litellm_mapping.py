"""What the callback makes of real LiteLLM calls (offline, ``mock_response``); no servers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.litellm import ANONYMOUS_KEY_ID, KEY_ID_FIELD, LedgerCallback, usage_fields
from integrations.litellm.mapping import NAMESPACE, derived_id
from integrations.litellm.metrics import CALLBACK_ERRORS
from ledger.codec import dump_event, parse_event
from ledger.producer import LedgerProducer
from ledger.producer.spool import Spool
from ledger.settings import Settings
from ops.devstack.ports import free_port
from tests.integrations.litellm_calls import (
    CALLS,
    MESSAGES,
    Capture,
    chat,
    image_generation,
    registered,
    settle,
)

# What the mocked calls report, by call: (prompt, completion, cache read, cache write,
# reasoning, audio in, audio out).
REPORTED = {
    "cached_reasoning": (1200, 300, 1024, 0, 100, 0, 0),
    "cache_write": (3000, 40, 500, 2000, 0, 0, 0),
    "audio": (700, 900, 0, 0, 0, 600, 800),
}
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens", "reasoning_tokens", "audio_input_tokens",
                 "audio_output_tokens")


@pytest.fixture
def capture() -> Iterator[Capture]:
    found = Capture()
    with registered(found):
        yield found


async def _captured(capture: Capture, name: str, **options: object) -> tuple[dict, object]:
    before = len(capture.calls)
    await CALLS[name](**options)
    await settle(capture, before + 1)
    return capture.calls[before]


@pytest.mark.parametrize("name", sorted(REPORTED))
async def test_every_token_kind_as_litellm_reported(capture: Capture, name: str) -> None:
    kwargs, response = await _captured(capture, name)
    fields = usage_fields(kwargs, response)
    assert tuple(fields[f] for f in _TOKEN_FIELDS) == REPORTED[name]
    assert fields["status"] == "success" and fields["error_code"] is None


async def test_the_call_is_described_as_litellm_saw_it(capture: Capture) -> None:
    kwargs, response = await _captured(capture, "priority")
    slo = kwargs["standard_logging_object"]
    fields = usage_fields(kwargs, response)
    assert fields["request_id"] == slo["litellm_call_id"] == kwargs["litellm_call_id"]
    assert (fields["model"], fields["provider"], fields["service_tier"]) == (
        "gpt-4o", "openai", "priority")
    assert fields["latency_ms"] == round(slo["response_time"] * 1000)
    assert fields["occurred_at"].timestamp() == pytest.approx(slo["endTime"], abs=1e-6)
    # LiteLLM's float cost travels as metadata only; the ledger prices the event itself.
    assert fields["metadata"]["litellm_response_cost"] == repr(slo["response_cost"])
    assert "cost_usd" not in fields


async def test_streams_embeddings_and_failures(capture: Capture) -> None:
    streamed, _ = await _captured(capture, "stream")
    fields = usage_fields(streamed, None)
    slo = streamed["standard_logging_object"]
    assert fields["metadata"]["litellm_stream"] == "true"
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (
        slo["prompt_tokens"], slo["completion_tokens"]) and fields["completion_tokens"] > 0
    embedded, response = await _captured(capture, "embedding")
    fields = usage_fields(embedded, response)
    assert fields["metadata"]["litellm_call_type"] == "aembedding"
    assert fields["prompt_tokens"] == response.usage.prompt_tokens > 0
    failed, response = await _captured(capture, "failure")
    fields = usage_fields(failed, response)
    assert (fields["status"], fields["error_code"]) == ("error", "500")
    assert fields["metadata"]["litellm_error_class"] == "InternalServerError"


@pytest.mark.parametrize("model", ["gemini/gemini-3-pro-image-preview", "dall-e-3"])
async def test_generated_images_are_output_images_not_input_images(
    capture: Capture, model: str,
) -> None:
    before = len(capture.calls)
    response = await image_generation(model)
    await settle(capture, before + 1)
    kwargs, _ = capture.calls[before]
    reported = kwargs["standard_logging_object"]["metadata"]["usage_object"]
    assert reported["output_image_count"] == len(response.data) == 1
    fields = usage_fields(kwargs, response)
    # LiteLLM reports no count of input images: images stays 0.
    assert (fields.get("images", 0), fields["output_images"]) == (0, 1)
    assert fields["metadata"]["litellm_call_type"] == "aimage_generation"
    event = parse_event(dump_event(LedgerCallback().build_event(kwargs, response)))
    assert (event.images, event.output_images) == (0, 1)


async def test_a_retried_callback_builds_the_same_event(capture: Capture) -> None:
    callback = LedgerCallback()
    first, response = await _captured(capture, "chat")
    second, _ = await _captured(capture, "chat")
    once, again = callback.build_event(first, response), callback.build_event(first, response)
    assert once.event_id == again.event_id and dump_event(once) == dump_event(again)
    assert callback.build_event(second, None).event_id != once.event_id


async def test_the_key_id_comes_from_the_request(capture: Capture) -> None:
    callback = LedgerCallback()
    key_id = uuid.uuid4()
    given, _ = await _captured(capture, "chat", metadata={KEY_ID_FIELD: str(key_id)})
    event = callback.build_event(given, None)
    assert event.api_key_id == key_id and event.metadata["litellm_key_source"] == "ledger"
    anonymous, _ = await _captured(capture, "chat")
    assert callback.build_event(anonymous, None).api_key_id == ANONYMOUS_KEY_ID


@pytest.mark.parametrize("name", ["litellm-call:4624d271-9ab9-414e-aa87-c8aa149593f2", "", "é"])
def test_derived_ids_are_uuid5(name: str) -> None:
    assert derived_id(name) == uuid.uuid5(NAMESPACE, name)


async def test_a_failing_callback_never_fails_the_request(
    capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    # A producer that was never started refuses every emit: the callback's failure path.
    broken = LedgerCallback(producer=LedgerProducer("127.0.0.1:1"))
    errors = CALLBACK_ERRORS.labels("emit")
    before = errors._value.get()
    with registered(capture, broken), caplog.at_level(logging.ERROR,
                                                      logger="integrations.litellm.callback"):
        answer = await chat()
        await settle(capture, 1)
        for _ in range(100):
            if broken.errors:
                break
            await asyncio.sleep(0.01)
    assert answer.choices[0].message.content == "Four."
    assert broken.errors == 1 and broken.emitted == 0
    assert errors._value.get() == before + 1
    assert any("could not record a LiteLLM call" in r.getMessage() for r in caplog.records)


@pytest.mark.slow  # waits out the producer's 10 s connect attempt to an absent broker
async def test_with_the_broker_away_calls_are_spooled_not_lost(
    capture: Capture, tmp_path: Path
) -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                        spool_dir=tmp_path / "spool")
    callback = LedgerCallback(settings)
    first, response = await _captured(capture, "chat")
    second, _ = await _captured(capture, "embedding")
    try:
        await callback.record(first, response)  # starts the producer: Kafka is not there
        producer = callback.producer
        assert producer is not None and producer.spooling
        started = time.perf_counter()
        await callback.record(second, None)
        assert time.perf_counter() - started < 0.05  # emit returns at once
        await callback.flush()
        stats = producer.spool_stats()
        assert stats is not None and stats.pending_bytes > 0
    finally:
        await callback.close()
    assert callback.errors == 0 and callback.emitted == 2
    spool = Spool(tmp_path / "spool" / "process-0")  # left for the next start to resend
    try:
        records, _ = spool.read(10)
    finally:
        spool.close()
    assert [json.loads(r.value)["request_id"] for r in records] == [
        first["litellm_call_id"], second["litellm_call_id"]]


@pytest.mark.slow  # waits out the producer's 10 s connect attempt to an absent broker
async def test_synchronous_calls_are_recorded_on_the_producers_loop(tmp_path: Path) -> None:
    """litellm.completion calls only the synchronous hooks, from a thread of its own."""
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                        spool_dir=tmp_path / "spool")
    callback = LedgerCallback(settings)
    before = CALLBACK_ERRORS.labels("no_event_loop")._value.get()
    with registered(callback):
        await asyncio.to_thread(_sync_chat)  # no producer runs yet: counted, not recorded
        await _until(lambda: callback.errors == 1)
        assert CALLBACK_ERRORS.labels("no_event_loop")._value.get() == before + 1
        await chat()  # an async call starts the producer
        await _until(lambda: callback.emitted == 1)
        await asyncio.to_thread(_sync_chat)
        await _until(lambda: callback.emitted == 2)
    await callback.close()
    assert callback.errors == 1


def _sync_chat() -> None:
    import litellm

    litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="Four.")


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def test_one_hour_cache_writes_are_kept_in_the_metadata() -> None:
    """usage.recorded has no field for them (priced at the 5-minute rate): kept to be seen."""
    usage = {"prompt_tokens": 3000, "completion_tokens": 10, "prompt_tokens_details": {
        "cache_write_tokens": 2000, "cache_creation_token_details": {
            "ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500}}}
    fields = usage_fields({"litellm_call_id": "call-1", "standard_logging_object": {
        "litellm_call_id": "call-1", "status": "success", "model": "claude-sonnet-4-5",
        "metadata": {"usage_object": usage}}}, None)
    assert fields["cache_creation_input_tokens"] == 2000
    assert fields["metadata"]["litellm_cache_creation_1h_tokens"] == "1500"


@pytest.mark.parametrize("odd", [
    pytest.param({"call_type": "x" * 5000}, id="long-call-type"),
    pytest.param({"model": "gpt-4o\n\x00\x07mini", "custom_llm_provider": "open\tai"},
                 id="control-characters"),
    pytest.param({"model": "gpt-\ud800x"}, id="lone-surrogate"),
    pytest.param({"usage": {"prompt_tokens": 1e12, "completion_tokens": float("nan")}},
                 id="huge-and-nan-counts"),
    pytest.param({"usage": {"prompt_tokens": float("inf"), "completion_tokens": 10**15}},
                 id="infinite-and-huge-int-counts"),
    pytest.param({"response_time": float("nan")}, id="nan-response-time"),
    pytest.param({"cost_breakdown": {"service_tier": "flex\x1b[0m" + "y" * 600}},
                 id="odd-service-tier"),
    pytest.param({"response_time": 1e300}, id="endless-response-time"),
    pytest.param({"endTime": float("inf")}, id="infinite-end-time"),
    pytest.param({"endTime": 1e11}, id="end-time-in-year-5138"),
    pytest.param({"status": "failure", "error_information": {
        "error_class": "E" * 900, "error_code": "\x01"}}, id="odd-error"),
])
def test_whatever_litellm_reports_the_call_is_recorded(odd: dict[str, object]) -> None:
    """A value the wire refuses must not cost the call its record: the callback would log
    a build error and the call would go uncounted (and unbilled)."""
    usage = odd.pop("usage", {"prompt_tokens": 12, "completion_tokens": 3})
    slo = {"litellm_call_id": "call-odd", "status": "success", "model": "gpt-4o",
           "metadata": {"usage_object": usage}, **odd}
    event = LedgerCallback(producer=None).build_event(  # type: ignore[arg-type]
        {"litellm_call_id": "call-odd", "standard_logging_object": slo}, None)
    assert event.request_id == "call-odd"
    assert parse_event(dump_event(event)) == event  # what the projector will accept


async def test_step_one_keeps_plain_values_that_step_two_finishes(capture: Capture) -> None:
    """The callback reads the call on LiteLLM's path (read_call) and computes the event id,
    the time and the cost's text in its own task (finish_fields): together they make what
    usage_fields makes, for every kind of call, and finishing is repeatable (a call put back
    in the queue is finished again)."""
    from integrations.litellm.mapping import finish_fields, read_call

    for name in sorted(CALLS):
        kwargs, response = await _captured(capture, name)
        read = read_call(kwargs, response)
        # Only plain values wait in the queue: nothing of LiteLLM's that could change.
        assert type(read["occurred_at"]) is float and read["event_id"] is None
        assert finish_fields(read) == usage_fields(kwargs, response) == finish_fields(read)


def test_a_call_without_a_timestamp_occurred_when_its_callback_ran() -> None:
    """Without LiteLLM's endTime the call is dated when the callback read it, not when the
    callback's task made its event (later, by the queue's wait)."""
    from integrations.litellm.mapping import finish_fields, read_call

    before = datetime.now(UTC)
    read = read_call({"litellm_call_id": "call-t", "standard_logging_object": {
        "litellm_call_id": "call-t", "status": "success", "model": "gpt-4o"}}, None)
    after = datetime.now(UTC)
    time.sleep(0.05)
    slack = timedelta(milliseconds=1)  # the float timestamp's rounding to microseconds
    assert before - slack <= finish_fields(read)["occurred_at"] <= after + slack
