"""Shared helpers of the event/producer tests: unique topics, consuming, a private broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ledger.routing import Topics
from ledger.topics import TopicSpec, ensure_topics
from ops.devstack import EmbeddedBroker
from ops.devstack.ports import free_port


def unique_topics() -> Topics:
    suffix = uuid.uuid4().hex[:10]
    return Topics(usage=f"usage-{suffix}", keys=f"keys-{suffix}", catalog=f"catalog-{suffix}",
                  alerts=f"alerts-{suffix}")


async def create_topics(bootstrap: str, topics: Topics, partitions: int = 3) -> None:
    """Create explicitly: auto-create is unreliable on the embedded broker."""
    await ensure_topics(bootstrap, [TopicSpec(name, partitions)
                                    for name in (topics.usage, topics.keys, topics.catalog,
                                                 topics.alerts)])


async def consume(
    bootstrap: str, topic_names: list[str], expected: int, timeout_s: float = 20.0
) -> list[Any]:
    """Read from the beginning until ``expected`` messages arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    messages: list[Any] = []
    try:
        await consumer.start()  # inside: a consumer that failed to start must be stopped too
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(messages) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


@contextmanager
def private_broker(root: Path) -> Iterator[EmbeddedBroker]:
    """A broker only this test stops and restarts (restarting empties its memory storage)."""
    broker = EmbeddedBroker(root / "broker", free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def fail_next_batches(monkeypatch: Any, errors: list[BaseException]) -> None:
    """The next ``len(errors)`` batches sent by any AIOKafkaProducer fail with these errors,
    as aiokafka reports an error produce response; later batches reach the real broker.

    The embedded broker never answers with a non-retriable produce error (it has no ACLs
    and no size limit), so the client boundary is where such an answer is injected.
    """
    original = AIOKafkaProducer.send_batch
    remaining = list(errors)

    async def send_batch(self: AIOKafkaProducer, batch: Any, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        if remaining:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(remaining.pop(0))
            return failed
        return await original(self, batch, topic, partition=partition)

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", send_batch)
