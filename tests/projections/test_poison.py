"""No single message stops a partition: each kind of poison found by hand, among valid events.

Each case sends valid events, one poison message, then more valid events to the same
partition; every valid event must be projected and the poison must be one dead letter with
its reason, while the worker keeps running.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiokafka.codec
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from ledger.codec import dump_event
from ledger.events import UsageRecorded
from ledger.settings import Settings
from projections.base import Envelope
from projections.status import log_ends
from projections.usage import UsageProjection
from tests.projections.helpers import (
    emit,
    fetchval,
    ground_truth,
    running_worker,
    summaries,
    usage_event,
    wait_for_rows,
)

COUNT = "SELECT count(*) FROM usage_records"
LETTERS = "SELECT count(*) FROM dead_letters"


def _valid_body(key: uuid.UUID, **changes: Any) -> bytes:
    body = json.loads(dump_event(usage_event(key)))
    body.update(changes)
    return json.dumps(body).encode()


POISON: dict[str, tuple[bytes | None, list[tuple[str, bytes | None]], str]] = {
    # name: (value, headers, expected error_kind)
    "tombstone": (None, [], "invalid_event"),
    "null header value": (b"{not json", [("type", None)], "invalid_event"),
    "6000-character model": (None, [], "invalid_event"),  # body built per key below
    "prompt_tokens 2^64": (None, [], "invalid_event"),
    "occurred_at 9999-12-31T23:00Z": (None, [], "invalid_event"),
    "occurred_at 0001-01-01T00:00+01:00": (None, [], "invalid_event"),
    "NUL in request_id": (None, [], "invalid_event"),
}
_BODY_CHANGES: dict[str, dict[str, Any]] = {
    "6000-character model": {"model": "m" * 6000},
    "prompt_tokens 2^64": {"prompt_tokens": 2**64},
    "occurred_at 9999-12-31T23:00Z": {"occurred_at": "9999-12-31T23:00:00Z"},
    "occurred_at 0001-01-01T00:00+01:00": {"occurred_at": "0001-01-01T00:00:00+01:00"},
    "NUL in request_id": {"request_id": "req\u0000nul"},
}


@pytest.mark.parametrize("case", list(POISON))
async def test_one_poison_message_among_valid_events_is_a_dead_letter(
    settings: Settings, case: str
) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    key = uuid.uuid4()
    before = [usage_event(key) for _ in range(20)]
    after = [usage_event(key) for _ in range(20)]
    value, headers, kind = POISON[case]
    if case in _BODY_CHANGES:
        value = _valid_body(key, **_BODY_CHANGES[case])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for event in before:
            await producer.send_and_wait(settings.topic_usage, dump_event(event),
                                         key=str(key).encode())
        await producer.send_and_wait(settings.topic_usage, value, key=str(key).encode(),
                                     headers=headers)
        for event in after:
            await producer.send_and_wait(settings.topic_usage, dump_event(event),
                                         key=str(key).encode())
    finally:
        await producer.stop()
    async with running_worker(settings, ("usage",)) as worker:
        await wait_for_rows(settings.database_url, COUNT, 40)
        await wait_for_rows(settings.database_url, LETTERS, 1)
        assert worker.runners[0].fatal is None
    assert await fetchval(settings.database_url, "SELECT error_kind FROM dead_letters") == kind
    assert await summaries(settings.database_url) == ground_truth(before + after)


def _produce_with(bootstrap: str, topic: str, codec: str, events: list[UsageRecorded]) -> None:
    """Send one compressed batch per partition key, as librdkafka (Go, C, ...) gateways do."""
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                         "linger.ms": 100, "acks": "all", "enable.idempotence": False,
                         "partitioner": "murmur2_random"})  # the Java client's, as ours
    for event in events:
        producer.produce(topic, dump_event(event), key=str(event.api_key_id).encode())
    assert producer.flush(30) == 0


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_batches_compressed_by_librdkafka_are_projected(
    settings: Settings, codec: str
) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    key = uuid.uuid4()
    events = [usage_event(key) for _ in range(200)]
    await asyncio.to_thread(_produce_with, settings.kafka_bootstrap_servers,
                            settings.topic_usage, codec, events)
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 200)
    assert await fetchval(settings.database_url, LETTERS) == 0
    assert await summaries(settings.database_url) == ground_truth(events)


@pytest.fixture
def without_snappy() -> Iterator[None]:
    """This process loses its snappy decoder: a codec it cannot read, as a new one would be."""
    saved = aiokafka.codec.cramjam
    aiokafka.codec.cramjam = None
    try:
        yield
    finally:
        aiokafka.codec.cramjam = saved


async def test_a_batch_that_cannot_be_read_is_one_dead_letter_and_the_partition_moves_on(
    settings: Settings, without_snappy: None
) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    key = uuid.uuid4()
    plain = [usage_event(key) for _ in range(10)]
    unreadable = [usage_event(key) for _ in range(50)]
    later = [usage_event(key) for _ in range(10)]
    await emit(settings, plain)
    await asyncio.to_thread(_produce_with, settings.kafka_bootstrap_servers,
                            settings.topic_usage, "snappy", unreadable)
    await emit(settings, later)
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 20)
        await wait_for_rows(settings.database_url, LETTERS, 1)
    row = await _one(settings.database_url,
                     'SELECT error_kind, error, "offset" FROM dead_letters')
    assert row["error_kind"] == "unreadable_batch"
    assert f"{settings.topic_usage}[" in row["error"] and "offsets 10..59" in row["error"]
    assert row["offset"] == 10
    assert await summaries(settings.database_url) == ground_truth(plain + later)


async def test_status_reads_a_log_ending_in_a_batch_it_cannot_decode(
    settings: Settings, without_snappy: None
) -> None:
    """`ledger status` fetches the last batch of each log for its end: it must not crash."""
    assert settings.kafka_bootstrap_servers
    key = uuid.uuid4()
    await emit(settings, [usage_event(key) for _ in range(5)])
    await asyncio.to_thread(_produce_with, settings.kafka_bootstrap_servers,
                            settings.topic_usage, "snappy", [usage_event(key) for _ in range(30)])
    ends = await log_ends(settings.kafka_bootstrap_servers, [settings.topic_usage])
    assert sum(ends.values()) == 35


async def test_same_event_id_with_another_payload_is_a_conflicting_duplicate(
    settings: Settings
) -> None:
    assert settings.database_url
    key = uuid.uuid4()
    first = usage_event(key, cost=Decimal("0.5"))
    resent = first.model_copy()  # the usual duplicate: silent
    other_key = first.model_copy(update={"api_key_id": uuid.uuid4()})
    other_month = first.model_copy(update={"occurred_at": datetime(2026, 1, 15, tzinfo=UTC)})
    await emit(settings, [first])
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 1)
        # Later batches, and two copies inside one batch.
        await emit(settings, [resent, other_key])
        await emit(settings, [other_month, first.model_copy(update={"cost_usd": Decimal(9)})])
        await wait_for_rows(settings.database_url, LETTERS, 3)
    kinds = await fetchval(settings.database_url,
                           "SELECT array_agg(DISTINCT error_kind) FROM dead_letters")
    assert kinds == ["conflicting_duplicate"]
    assert await summaries(settings.database_url) == ground_truth([first])


async def test_poison_in_the_first_batch_of_a_new_connection_does_not_lose_the_stage(
    pg_dsn: str
) -> None:
    """A NUL the database refuses, on a fresh session: the staging table must survive."""
    key = uuid.uuid4()
    good = usage_event(key)
    bad = UsageRecorded.model_construct(**{**usage_event(key).__dict__,
                                           "request_id": "nul\u0000here"})
    projection = UsageProjection()
    conn = await asyncpg.connect(pg_dsn)
    try:
        envelopes = [Envelope("t", 0, i, None, e) for i, e in enumerate([bad, good])]
        await projection.prepare(conn, envelopes)
        async with conn.transaction():
            result = await projection.apply(conn, envelopes)
        assert result.applied == 1
        assert [f.envelope.event.event_id for f in result.failures] == [bad.event_id]
        assert await conn.fetchval("SELECT count(*) FROM usage_records") == 1
    finally:
        await conn.close()


async def _one(dsn: str, sql: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(sql)
        assert row is not None
        return row
    finally:
        await conn.close()
