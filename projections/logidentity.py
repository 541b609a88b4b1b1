"""Is the log a checkpoint points into still the log it was taken from?

A memory-only broker that restarts, or a topic deleted and created again, starts its
offsets over with other records. A checkpoint of 3,000 then silently skips offsets 0..2,999
of the new log once it has grown past 3,000 (the broker-reset loss this module prevents).

So each checkpoint remembers an *anchor*: the offset and a digest of the first record it
applied. The log is the same when the record at that offset still has that digest. Reading
one record per partition is cheap, so the projector checks on every assignment and every
few seconds while it runs, and ``ledger rebuild`` checks before it replaces live tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from projections.unreadable import UnreadableBatch


@dataclass(frozen=True, slots=True)
class Anchor:
    offset: int
    digest: bytes


class Verdict(enum.Enum):
    SAME = "same"  # the anchor record is there, unchanged
    DIFFERENT = "different"  # another record at that offset, or the log ends before it
    GONE = "gone"  # the log no longer starts at or before the anchor (retention, deletion)
    UNKNOWN = "unknown"  # no answer in time (broker away); ask again later


def record_digest(record: Any) -> bytes:
    """Digest of what identifies one record in one log: key, value and timestamp."""
    value = record.value
    if isinstance(value, UnreadableBatch):
        body = f"unreadable:{value.first_offset}:{value.last_offset}".encode()
    else:
        body = bytes(value) if value is not None else b"\xff-null"
    digest = hashlib.blake2b(digest_size=16)
    digest.update(bytes(record.key) if record.key is not None else b"\xff-null")
    digest.update(b"\x00")
    digest.update(body)
    digest.update(b"\x00")
    digest.update(str(record.timestamp).encode())
    return digest.digest()


class LogProbe:
    """A group-less consumer that reads the record at each anchor, without moving anyone."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 5.0) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(TimeoutError, KafkaError):
                await asyncio.wait_for(consumer.stop(), timeout=5)

    async def check(
        self, anchors: Mapping[TopicPartition, Anchor]
    ) -> dict[TopicPartition, Verdict]:
        """A verdict per partition; UNKNOWN where the broker did not answer in time."""
        verdicts = dict.fromkeys(anchors, Verdict.UNKNOWN)
        if not anchors:
            return verdicts
        try:
            consumer = await self._started()
            consumer.assign(list(anchors))
            starts = await asyncio.wait_for(
                consumer.beginning_offsets(list(anchors)), timeout=self._timeout_s)
            for tp, anchor in anchors.items():
                start = starts.get(tp)
                if start is not None and start > anchor.offset:
                    verdicts[tp] = Verdict.GONE
                else:
                    consumer.seek(tp, anchor.offset)
            await self._read_anchors(consumer, anchors, verdicts)
        except (KafkaError, TimeoutError, OSError):
            await self.close()  # start afresh next time; what was decided stands
        return verdicts

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                request_timeout_ms=int(self._timeout_s * 1000) + 1000)
            try:
                await asyncio.wait_for(consumer.start(), timeout=self._timeout_s)
            except BaseException:
                # A consumer that failed to start still holds a client: stop it, or every
                # probe while the broker is away leaves one behind.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), timeout=5)
                raise
            self._consumer = consumer
        return self._consumer

    async def _read_anchors(
        self, consumer: AIOKafkaConsumer, anchors: Mapping[TopicPartition, Anchor],
        verdicts: dict[TopicPartition, Verdict],
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        pending = {tp for tp, v in verdicts.items() if v is Verdict.UNKNOWN}
        while pending and loop.time() < deadline:
            # One record per partition is all it reads: max_records keeps aiokafka from
            # unpacking whole fetches (~1 MiB a partition) every check, 6% of a busy worker.
            batch = await consumer.getmany(*pending, timeout_ms=200, max_records=len(pending))
            for tp, records in batch.items():
                if tp in pending and records:
                    first = records[0]
                    same = (first.offset == anchors[tp].offset
                            and record_digest(first) == anchors[tp].digest)
                    verdicts[tp] = Verdict.SAME if same else Verdict.DIFFERENT
                    pending.discard(tp)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and highwater <= anchors[tp].offset:
                    verdicts[tp] = Verdict.DIFFERENT  # the log ends before the anchor
                    pending.discard(tp)
