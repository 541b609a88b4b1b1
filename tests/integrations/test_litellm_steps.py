"""The callback's three steps against the real broker: read on LiteLLM's path, then validated
and handed to the producer in the callback's own task (integrations/litellm/callback.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from integrations.litellm import LedgerCallback
from integrations.litellm import callback as callback_module
from integrations.litellm.metrics import CALLBACK_ERRORS
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ledger.topics import TopicSpec, ensure_topics
from tests.ledger.producer_helpers import consume


@pytest.fixture
async def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    topic = f"usage-steps-{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1)])
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_usage=topic,
                    spool_dir=tmp_path / "spool")


def _call(number: int) -> dict[str, Any]:
    """The kwargs of one finished call, as LiteLLM hands them to its callbacks."""
    call_id = f"call-{number}"
    return {"litellm_call_id": call_id, "standard_logging_object": {
        "litellm_call_id": call_id, "status": "success", "model": "gpt-4o",
        "metadata": {"usage_object": {"prompt_tokens": 10 + number, "completion_tokens": 2}}}}


async def _request_ids(settings: Settings, expected: int) -> list[str]:
    assert settings.kafka_bootstrap_servers
    messages = await consume(settings.kafka_bootstrap_servers, [settings.topic_usage], expected)
    return [json.loads(message.value)["request_id"] for message in messages]


async def test_the_callback_returns_before_its_event_is_built(settings: Settings) -> None:
    callback = LedgerCallback(settings)
    try:
        await callback.record(_call(0), None)  # starts the producer
        await callback.flush()
        assert callback.emitted == 1
        await callback.record(_call(1), None)
        assert callback.emitted == 1  # read and queued; steps 2 and 3 wait for the loop
        await callback.flush()
        assert callback.emitted == 2
    finally:
        await callback.close()
    assert await _request_ids(settings, 2) == ["call-0", "call-1"]


async def test_calls_still_queued_at_close_are_sent(settings: Settings) -> None:
    callback = LedgerCallback(settings)
    await callback.record(_call(0), None)
    for number in range(1, 50):  # the loop never turns in between: all wait in the queue
        await callback.record(_call(number), None)
    await callback.close()
    assert callback.emitted == 50 and callback.errors == 0
    assert await _request_ids(settings, 50) == [f"call-{n}" for n in range(50)]


async def test_a_call_that_fails_validation_does_not_stop_the_others(
        settings: Settings) -> None:
    callback = LedgerCallback(settings)
    failures = CALLBACK_ERRORS.labels("build")
    before = failures._value.get()
    try:
        await callback.record(_call(0), None)
        callback.source = ""  # the wire refuses an empty source: step 2 fails for this call
        await callback.record(_call(1), None)
        callback.source = "litellm"
        await callback.record(_call(2), None)  # in the same batch as the failing one
        await callback.flush()
    finally:
        await callback.close()
    assert (callback.emitted, callback.errors) == (2, 1)
    assert failures._value.get() == before + 1
    assert await _request_ids(settings, 2) == ["call-0", "call-2"]


async def test_back_pressure_bounds_the_queue_and_reaches_the_callbacks(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module, "MAX_QUEUED_CALLS", 5)
    # One record at a time may be unresolved: step 3 waits for each delivery in turn.
    producer = LedgerProducer.from_settings(settings, max_pending=1)
    await producer.start()
    callback = LedgerCallback(producer=producer)
    calls = [asyncio.create_task(callback.record(_call(number), None)) for number in range(30)]
    longest, waited = 0, False
    try:
        while True:
            await asyncio.sleep(0)
            pending = not all(call.done() for call in calls)
            longest = max(longest, len(callback._queued))
            waited = waited or (pending and len(callback._queued) == 5)
            if not pending:
                break
        await callback.flush()
    finally:
        await callback.close()
    assert longest <= 5 and waited
    assert callback.emitted == 30
    assert sorted(await _request_ids(settings, 30)) == sorted(f"call-{n}" for n in range(30))


async def test_a_call_recorded_while_the_callback_closes_is_sent_or_counted(
        settings: Settings) -> None:
    callback = LedgerCallback(settings)
    await callback.record(_call(0), None)  # starts the producer
    await callback.flush()  # the callback's task waits for calls: close() stops it at once
    racing = asyncio.create_task(callback.record(_call(1), None))  # runs inside close()
    await callback.close()
    await racing
    assert callback._queued == []  # nothing kept back for a later producer
    assert (callback.emitted, callback.errors) == (2, 0)
    assert await _request_ids(settings, 2) == ["call-0", "call-1"]


async def test_calls_survive_their_task_being_cancelled_half_way(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop may cancel the callback's task (a shutdown, another library): the calls it
    held go back to the queue and a new task takes them; callbacks waiting for room in a
    full queue wake up and a new task starts for them."""
    monkeypatch.setattr(callback_module, "MAX_QUEUED_CALLS", 5)
    producer = LedgerProducer.from_settings(settings, max_pending=1)
    await producer.start()
    callback = LedgerCallback(producer=producer)
    calls = [asyncio.create_task(callback.record(_call(number), None)) for number in range(20)]
    try:
        for _ in range(3):  # cancelled at idle or in step 3 (waiting on back-pressure)
            for _ in range(5):
                await asyncio.sleep(0)
            emitting = callback._emitting
            assert emitting is not None
            emitting.cancel()
        await asyncio.wait_for(asyncio.gather(*calls), 30)
        await callback.flush()
    finally:
        await callback.close()
    assert (callback.emitted, callback.errors) == (20, 0)
    assert sorted(await _request_ids(settings, 20)) == sorted(f"call-{n}" for n in range(20))
