"""Checkpoints, log ends and lag per projection and partition, topics that differ from the
settings, and unpriced and re-priced usage, for ``ledger status``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.db import connect
from ledger.settings import Settings
from ledger.topics import TopicDifference, topic_differences, topic_specs
from projections.registry import PROJECTION_NAMES, make_projection
from projections.storage import count_by_reason, read_checkpoints


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    projection: str
    topic: str
    partition: int
    checkpoint: int
    log_end: int | None
    lag: int | None


async def log_ends(bootstrap_servers: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Each partition's log end, read as a fetch high watermark.

    The embedded broker answers ListOffsets(latest) wrongly for multi-record batches, while the
    high watermark in fetch responses is right, so we fetch once from the end of each log.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        await consumer.start()  # inside: a consumer that failed to start must be stopped too
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not partitions:
            # Let the consumer's background task start: stopping it before its first step
            # raises CancelledError out of stop() (aiokafka), a traceback for `ledger status`.
            await asyncio.sleep(0)
            return {}
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            # Seek just before the (possibly wrong) listed end; the fetch reports the truth.
            consumer.seek(tp, max(starts[tp], ends[tp] - 1))
        await consumer.getmany(timeout_ms=1000)
        return {tp: consumer.highwater(tp) or ends[tp] for tp in partitions}
    finally:
        await consumer.stop()


async def projection_status(
    settings: Settings, dsn: str, bootstrap_servers: str
) -> tuple[list[PartitionStatus], list[tuple[str, str, int]]]:
    conn = await connect(dsn, settings)
    try:
        checkpoints = await read_checkpoints(conn)
        dead = await count_by_reason(conn)
    finally:
        await conn.close()
    topics = [make_projection(name).topic(settings) for name in PROJECTION_NAMES]
    ends = await log_ends(bootstrap_servers, topics)
    result = []
    for c in checkpoints:
        end = ends.get(TopicPartition(c.topic, c.partition))
        lag = None if end is None else max(end - c.next_offset, 0)
        result.append(PartitionStatus(c.projection, c.topic, c.partition, c.next_offset,
                                      end, lag))
    return result, dead


@dataclass(frozen=True, slots=True)
class PricingStatus:
    unpriced: int  # usage events without a cost (the summaries' unpriced_requests)
    repriced: int  # cost changes a catalog change made (usage_repricings rows)
    net_usd: Decimal  # what they added to the spend, in all
    last_at: datetime | None

    def line(self) -> str:
        """One line for ``ledger status``."""
        text = f"pricing: {self.unpriced} usage events unpriced; "
        if not self.repriced:
            return text + "none re-priced after catalog changes"
        assert self.last_at is not None
        sign = "+" if self.net_usd >= 0 else ""
        return (text + f"{self.repriced} re-priced after catalog changes "
                f"(net {sign}{self.net_usd} USD, last {self.last_at.astimezone(UTC).isoformat()})")


_PRICING = """
SELECT (SELECT coalesce(sum(unpriced_requests), 0) FROM monthly_usage_summaries) AS unpriced,
       count(*) AS repriced,
       coalesce(sum(coalesce(new_cost_usd, 0) - coalesce(old_cost_usd, 0)), 0) AS net_usd,
       max(repriced_at) AS last_at
  FROM usage_repricings
"""


async def pricing_status(settings: Settings, dsn: str) -> PricingStatus:
    """Unpriced usage, and what catalog changes re-priced (``projections.repricing``)."""
    conn = await connect(dsn, settings)
    try:
        row = await conn.fetchrow(_PRICING)
    finally:
        await conn.close()
    assert row is not None
    return PricingStatus(int(row["unpriced"]), int(row["repriced"]), row["net_usd"],
                         row["last_at"])


async def topic_configuration(settings: Settings, bootstrap_servers: str) -> list[TopicDifference]:
    """How the ledger's topics differ from the settings (retention, replication, ...)."""
    return await topic_differences(bootstrap_servers, topic_specs(settings))
