"""Turning queued records into aiokafka batches: partitioning, batching, in-flight tracking.

Records are appended to ``BatchBuilder`` batches per (topic, partition) and submitted with
``send_batch`` rather than one ``send`` per record: ``send`` costs tens of microseconds
each, which alone would miss the 50k events/s target on a small machine.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2

from ledger.codec import dump_event, dump_usage
from ledger.events import EVENT_CLASSES, ApiKeyUpdated, EventBase, UsageRecorded
from ledger.exceptions import LogRewoundError
from ledger.producer.spool import SpoolRecord
from ledger.routing import HEADERS_BY_CLASS, Topics


class PendingItem:
    """One emitted record on its way, and whether its outcome was already counted.

    ``settled`` (not ``future.done()``) decides whether an outcome still counts: the
    caller may cancel its future (e.g. ``wait_for`` timing out), and a record can be
    handed to the spool at close while its batch is still in flight.
    """

    __slots__ = ("future", "record", "settled")

    def __init__(self, record: SpoolRecord, future: asyncio.Future[Any]) -> None:
        self.record = record
        self.future = future
        self.settled = False


# (topic, partition, items, RecordMetadata or the exception) -> None
BatchCallback = Callable[[str, int, list[PendingItem], object], None]
Dumper = Callable[[EventBase], bytes]
Route = tuple[str, list[tuple[str, bytes]], Dumper]

# The key cache maps api_key_id -> partition; the bound only matters for gateways with
# millions of keys, where it is cheaper to recompute murmur2 than to grow without limit.
_MAX_CACHED_KEYS = 200_000


class Delivery(NamedTuple):
    """Where an emitted event ended up; ``spooled`` is durable and will be resent.

    A NamedTuple rather than a frozen dataclass: one is built per event on the hot path
    and a frozen dataclass costs several times more to construct.
    """

    status: Literal["sent", "spooled"]
    topic: str
    partition: int | None = None
    offset: int | None = None


def partition_for_key(key: bytes, partition_count: int) -> int:
    """Kafka's default partitioner (murmur2), documented for gateways in other languages."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partition_count


def route_table(topics: Topics) -> dict[type[EventBase], Route]:
    """Per event class: topic, headers and serializer, so emit does no per-call lookups."""
    table: dict[type[EventBase], Route] = {}
    for cls in EVENT_CLASSES:
        # dump_event's special paths where they apply; the bound serializer elsewhere.
        dumper: Dumper = (dump_usage if cls is UsageRecorded else dump_event
                          if cls is ApiKeyUpdated else cls.__pydantic_serializer__.to_json)
        # One headers list per class, shared by its records: nothing downstream mutates it.
        table[cls] = (getattr(topics, cls.topic_family), list(HEADERS_BY_CLASS[cls]), dumper)
    return table


# What a broker answers when a batch is larger than it accepts (MessageSizeTooLarge: the
# batch exceeds message.max.bytes; RecordListTooLarge: it exceeds the segment size), and
# what this client raises for a record that does not fit in one batch.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


def refused_for_good(error: BaseException, records_in_batch: int) -> bool:
    """True only when the broker refuses one record alone for its size: retrying it can
    never succeed, and left in the spool it would block everything behind it.

    Everything else is kept and retried, non-retriable Kafka errors included: an
    authorization, a topic, a broker version or its size limit for a batch of many
    records are states of the broker that an operator can change, not of the record.
    """
    return records_in_batch == 1 and isinstance(error, _TOO_LARGE)


class PendingBound:
    """Count of unresolved records with a limit: the producer's back-pressure.

    ``emit`` checks ``count < limit`` and increments inline (no call on the hot path); it
    awaits ``wait_capacity`` only at the limit. ``release`` wakes the waiters.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._capacity_waiters: deque[asyncio.Future[None]] = deque()
        self._idle_waiters: list[asyncio.Future[None]] = []

    async def wait_capacity(self) -> None:
        if self.count < self.limit:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._capacity_waiters.append(waiter)
        await waiter

    async def wait_idle(self) -> None:
        if self.count == 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def release(self, count: int) -> None:
        self.count -= count
        while self._capacity_waiters and self.count < self.limit:
            waiter = self._capacity_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self.count == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class PartitionMap:
    """Partition lists per topic and the partition of each recently seen key."""

    def __init__(self) -> None:
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes | None], int] = {}
        self._round_robin = 0

    async def ensure(self, kafka: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        if topic not in self._partitions:
            partitions = await asyncio.wait_for(kafka.partitions_for(topic), timeout_s)
            if not partitions:
                raise KafkaTimeoutError(f"no partitions known for {topic}")
            self._partitions[topic] = sorted(partitions)

    def knows(self, topic: str) -> bool:
        return topic in self._partitions

    def partition(self, topic: str, key: bytes | None) -> int:
        cache_key = (topic, key)
        cached = self._by_key.get(cache_key)
        if cached is not None:
            return cached
        partitions = self._partitions[topic]
        if key is None:
            self._round_robin += 1
            return partitions[self._round_robin % len(partitions)]
        # Same hash as Kafka's Java/librdkafka "murmur2_random" default partitioner.
        chosen = partitions[partition_for_key(key, len(partitions))]
        if len(self._by_key) >= _MAX_CACHED_KEYS:
            self._by_key.clear()
        self._by_key[cache_key] = chosen
        return chosen


class RecordSender:
    """Sends pending records through one started AIOKafkaProducer."""

    def __init__(
        self, kafka: AIOKafkaProducer, partitions: PartitionMap, metadata_timeout_s: float
    ) -> None:
        self.kafka = kafka
        self.partitions = partitions
        self.metadata_timeout_s = metadata_timeout_s
        self._inflight: dict[int, tuple[str, int, list[PendingItem]]] = {}
        self._next_batch_id = 0
        # Per partition, the offset after the last acknowledged batch: a later ack below it
        # means the broker's log went backwards (see ``_check_ack``).
        self._acked_end: dict[tuple[str, int], int] = {}

    async def _group(
        self, items: list[PendingItem]
    ) -> tuple[dict[tuple[str, int], list[PendingItem]], dict[str, BaseException]]:
        groups: dict[tuple[str, int], list[PendingItem]] = {}
        failed_topics: dict[str, BaseException] = {}
        partitions = self.partitions
        for item in items:
            record = item.record
            topic = record.topic
            if not partitions.knows(topic):
                if topic in failed_topics:
                    continue
                try:
                    await partitions.ensure(self.kafka, topic, self.metadata_timeout_s)
                except Exception as error:
                    failed_topics[topic] = error
                    continue
            groups.setdefault((topic, partitions.partition(topic, record.key)), []).append(item)
        return groups, failed_topics

    async def send(self, items: list[PendingItem], callback: BatchCallback) -> None:
        """Submit ``items``; ``callback`` is told the outcome of each batch exactly once."""
        groups, failed_topics = await self._group(items)
        for topic, error in failed_topics.items():
            callback(topic, -1, [item for item in items if item.record.topic == topic], error)
        for (topic, partition), group in groups.items():
            batch = self.kafka.create_batch()
            batch_items: list[PendingItem] = []
            for item in group:
                record = item.record
                if (
                    batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=record.headers
                    )
                    is None
                ):
                    if batch_items:
                        await self._submit(batch, topic, partition, batch_items, callback)
                    batch = self.kafka.create_batch()
                    batch_items = []
                    if (
                        batch.append(
                            key=record.key,
                            value=record.value,
                            timestamp=None,
                            headers=record.headers,
                        )
                        is None
                    ):
                        callback(topic, partition, [item],
                                 RecordTooLargeError("record too large for one batch"))
                        continue
                batch_items.append(item)
            if batch_items:
                await self._submit(batch, topic, partition, batch_items, callback)

    async def _submit(
        self,
        batch: Any,
        topic: str,
        partition: int,
        items: list[PendingItem],
        callback: BatchCallback,
    ) -> None:
        try:
            delivery = await self.kafka.send_batch(batch, topic, partition=partition)
        except Exception as error:
            callback(topic, partition, items, error)
            return
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        self._inflight[batch_id] = (topic, partition, items)

        def settled(future: asyncio.Future[Any]) -> None:
            if self._inflight.pop(batch_id, None) is None:
                return  # already handed to the spool by take_unacknowledged
            if future.cancelled():
                callback(topic, partition, items, asyncio.CancelledError())
            elif future.exception() is not None:
                callback(topic, partition, items, future.exception())
            else:
                callback(topic, partition, items,
                         self._check_ack(topic, partition, len(items), future.result()))

        delivery.add_done_callback(settled)

    def _check_ack(self, topic: str, partition: int, count: int, result: Any) -> Any:
        """The acknowledgement, or a LogRewoundError if its offset went backwards.

        A broker that lost its log (the embedded broker restarted, a topic recreated)
        starts offsets over -- and the embedded one even acknowledges writes to a topic it
        no longer has, at offset 0, and drops them. An acknowledged offset below the end of
        an earlier one on the same partition is such a log: the batch is not trusted, it is
        spooled and re-sent once the topic exists (a duplicate at worst; readers dedup).
        """
        offset = getattr(result, "offset", None)
        if not isinstance(offset, int) or offset < 0:
            return result
        floor = self._acked_end.get((topic, partition))
        self._acked_end[(topic, partition)] = offset + count
        if floor is not None and offset < floor:
            return LogRewoundError(
                f"{topic}[{partition}] acknowledged at offset {offset}, below {floor} already "
                "acknowledged: the broker's log was replaced; re-sending through the spool")
        return result

    def take_unacknowledged(self) -> list[PendingItem]:
        """Items of batches still in flight; their later outcome is then ignored."""
        items = [item for _, _, batch_items in self._inflight.values() for item in batch_items]
        self._inflight.clear()
        return items

    async def _require_topics(self, topics: set[str], timeout_s: float) -> None:
        """Fail (retriably) unless fresh metadata lists every topic.

        The cached metadata may describe a broker that has since lost the topic; some
        brokers (the embedded one) then acknowledge writes to it and drop them. A resend
        is rare, so asking the broker first costs nothing that matters.
        """
        cluster = await asyncio.wait_for(self.kafka.client.fetch_all_metadata(), timeout_s)
        missing = sorted(topic for topic in topics if not cluster.partitions_for_topic(topic))
        if missing:
            raise KafkaTimeoutError(f"topics not on the broker yet: {', '.join(missing)}")

    async def resend(self, records: list[SpoolRecord], timeout_s: float) -> list[SpoolRecord]:
        """Send spooled records in order and wait for all acknowledgements.

        Raises on any failure but one (the whole chunk is retried; duplicates are allowed).
        Returns the records the broker refused for good (``refused_for_good``: too large on
        their own), which would otherwise block the spool forever.
        """
        await self._require_topics({record.topic for record in records}, timeout_s)
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[None]] = []
        rejected: list[SpoolRecord] = []

        def collect(_topic: str, _partition: int, items: list[PendingItem], result: object) -> None:
            for item in items:
                if item.settled:
                    continue
                item.settled = True
                if not isinstance(result, BaseException):
                    item.future.set_result(None)
                elif refused_for_good(result, len(items)):
                    rejected.append(item.record)
                    item.future.set_result(None)
                else:
                    item.future.set_exception(result)

        items: list[PendingItem] = []
        for record in records:
            future: asyncio.Future[None] = loop.create_future()
            outcomes.append(future)
            items.append(PendingItem(record, future))
        await self.send(items, collect)
        # Longer than the request timeout: aiokafka expires the batches itself by then.
        results = await asyncio.wait_for(
            asyncio.gather(*outcomes, return_exceptions=True), timeout_s * 2 + 1
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return rejected
