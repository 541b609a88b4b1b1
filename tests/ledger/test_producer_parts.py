"""The producer's back-pressure bound and its partition map, each on its own.

PendingBound needs no server. PartitionMap learns partition lists from the real broker (the
``settings`` fixture's topics), then must choose partitions exactly as Kafka's clients do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from ledger.producer import partition_for_key, sending
from ledger.producer.sending import PartitionMap, PendingBound
from ledger.settings import Settings


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _acquire(bound: PendingBound, seen: list[int]) -> None:
    """What LedgerProducer.emit does: wait while at the limit, then count one record."""
    while bound.count >= bound.limit:
        await bound.wait_capacity()
    bound.count += 1
    seen.append(bound.count)


async def test_below_the_limit_capacity_is_there_without_suspending() -> None:
    bound = PendingBound(limit=2)
    bound.count = 1
    waiter = asyncio.create_task(bound.wait_capacity())
    await asyncio.sleep(0)
    assert waiter.done()


async def test_at_the_limit_a_waiter_resumes_only_when_a_record_is_released() -> None:
    bound = PendingBound(limit=2)
    bound.count = 2
    waiter = asyncio.create_task(bound.wait_capacity())
    await _settle()
    assert not waiter.done()
    bound.release(1)
    await _settle()
    assert waiter.done() and bound.count == 1


async def test_many_emitters_never_hold_more_than_the_limit() -> None:
    bound = PendingBound(limit=3)
    seen: list[int] = []
    emitters = [asyncio.create_task(_acquire(bound, seen)) for _ in range(10)]
    await _settle()
    assert len(seen) == 3  # the rest wait
    for _ in range(7):
        bound.release(1)
        await _settle()
    await asyncio.gather(*emitters)
    assert len(seen) == 10
    assert max(seen) == 3  # every emitter got in, none above the limit


async def test_a_cancelled_waiter_does_not_swallow_the_wakeup_of_another() -> None:
    bound = PendingBound(limit=1)
    bound.count = 1
    cancelled = asyncio.create_task(bound.wait_capacity())
    other = asyncio.create_task(bound.wait_capacity())
    await _settle()
    cancelled.cancel()
    await _settle()
    bound.release(1)
    await _settle()
    assert other.done() and not other.cancelled()


async def test_idle_waiters_wake_only_when_nothing_is_pending() -> None:
    bound = PendingBound(limit=10)
    immediately = asyncio.create_task(bound.wait_idle())
    await asyncio.sleep(0)
    assert immediately.done()  # nothing pending: flush returns at once
    bound.count = 3
    flushers = [asyncio.create_task(bound.wait_idle()) for _ in range(2)]
    bound.release(2)
    await _settle()
    assert not any(f.done() for f in flushers)
    bound.release(1)
    await _settle()
    assert all(f.done() for f in flushers)


@pytest.fixture
async def started_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


def _keys(n: int) -> list[bytes]:
    return [str(uuid.uuid4()).encode() for _ in range(n)]


async def test_a_key_goes_to_the_partition_kafkas_partitioner_picks(
    settings: Settings, started_producer: AIOKafkaProducer,
) -> None:
    partitions = PartitionMap()
    topic = settings.topic_usage
    assert not partitions.knows(topic)
    await partitions.ensure(started_producer, topic, 10)
    assert partitions.knows(topic)
    count = settings.topic_usage_partitions
    keys = _keys(200)
    chosen = [partitions.partition(topic, key) for key in keys]
    assert chosen == [partition_for_key(key, count) for key in keys]
    assert set(chosen) == set(range(count))  # 200 keys reach every partition
    assert [partitions.partition(topic, key) for key in keys] == chosen  # cached: the same


async def test_a_record_without_a_key_goes_round_robin_over_every_partition(
    settings: Settings, started_producer: AIOKafkaProducer,
) -> None:
    partitions = PartitionMap()
    await partitions.ensure(started_producer, settings.topic_usage, 10)
    count = settings.topic_usage_partitions
    chosen = [partitions.partition(settings.topic_usage, None) for _ in range(2 * count)]
    assert sorted(chosen) == sorted(list(range(count)) * 2)


async def test_the_same_key_in_topics_of_different_sizes_is_placed_per_topic(
    settings: Settings, started_producer: AIOKafkaProducer,
) -> None:
    partitions = PartitionMap()
    for topic in (settings.topic_usage, settings.topic_catalog):
        await partitions.ensure(started_producer, topic, 10)
    keys = _keys(50)
    for key in keys:
        assert partitions.partition(settings.topic_usage, key) == partition_for_key(
            key, settings.topic_usage_partitions)
        assert partitions.partition(settings.topic_catalog, key) == partition_for_key(
            key, settings.topic_catalog_partitions)


async def test_the_key_cache_is_bounded_and_stays_correct_past_its_bound(
    settings: Settings, started_producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sending, "_MAX_CACHED_KEYS", 8)
    partitions = PartitionMap()
    await partitions.ensure(started_producer, settings.topic_usage, 10)
    keys = _keys(50)
    for _ in range(2):
        for key in keys:
            assert partitions.partition(settings.topic_usage, key) == partition_for_key(
                key, settings.topic_usage_partitions)
            assert len(partitions._by_key) <= 8
