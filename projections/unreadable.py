"""Record batches that cannot be read become one placeholder record, never a stuck partition.

aiokafka decompresses and CRC-checks a record batch while the consumer drains it. When that
fails (a codec this process cannot decode, a damaged batch) it raises out of ``getmany``
and, on the next call, fetches the same batch again: the partition can never move on.

:func:`install` wraps the ``MemoryRecords`` class aiokafka's fetcher builds batches with.
Each batch is decoded eagerly inside a ``try``; a batch that fails yields a single record
whose offset is the batch's LAST offset and whose value is an :class:`UnreadableBatch`
(first and last offset, the error). aiokafka then advances past the whole batch as usual,
and our decoder turns the placeholder into one dead letter naming topic, partition and the
offset range. Every consumer in the process (projector, rebuild, status) is covered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as _fetcher

log = logging.getLogger("ledger.projector")


@dataclass(frozen=True, slots=True)
class UnreadableBatch:
    """Stands in for every record of a batch that could not be decoded."""

    first_offset: int
    last_offset: int
    error: str

    def __len__(self) -> int:  # aiokafka measures every value it hands out
        return 0

    def describe(self, topic: str, partition: int) -> str:
        return (f"unreadable record batch {topic}[{partition}] offsets "
                f"{self.first_offset}..{self.last_offset}: {self.error}")


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """Quacks like aiokafka's record for ``PartitionRecords._consumer_record``."""

    offset: int
    value: UnreadableBatch
    timestamp: int = -1
    timestamp_type: int = 0
    key: None = None
    checksum: None = None
    headers: tuple[()] = ()


class _GuardedBatch:
    """One record batch, decoded up front so that a failure can be caught here."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch
        self._records: list[Any] | None = None

    def __getattr__(self, name: str) -> Any:  # base_offset, next_offset, producer_id, ...
        return getattr(self._batch, name)

    def __next__(self) -> Any:  # aiokafka reads control batches with next()
        return next(self._batch)

    def validate_crc(self) -> bool:
        return True  # checked in __iter__, where a mismatch becomes a placeholder

    def __iter__(self) -> Iterator[Any]:
        batch = self._batch
        try:
            if hasattr(batch, "validate_crc") and not batch.validate_crc():
                raise ValueError("CRC mismatch")
            records = list(batch)
        except Exception as exc:
            first = int(batch.base_offset)
            last = int(batch.next_offset) - 1
            log.warning("record batch at offsets %d..%d cannot be read (%s: %s); it becomes "
                        "a dead letter", first, last, type(exc).__name__, exc)
            records = [_Placeholder(last, UnreadableBatch(first, last,
                                                          f"{type(exc).__name__}: {exc}"))]
        return iter(records)


class _GuardedRecords:
    """Wraps aiokafka's MemoryRecords; hands out guarded batches."""

    def __init__(self, buffer: Any) -> None:
        self._records = _ORIGINAL(buffer)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> _GuardedBatch | None:
        batch = self._records.next_batch()
        return None if batch is None else _GuardedBatch(batch)

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


_ORIGINAL: Any = _fetcher.MemoryRecords


def install() -> None:
    """Idempotent: make every aiokafka consumer of this process use guarded batches."""
    _fetcher.MemoryRecords = _GuardedRecords
