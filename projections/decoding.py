"""BatchDecoder: Kafka records -> envelopes and poison, with the offset range of each partition."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ledger.events import parse_event
from ledger.exceptions import EventDecodeError
from projections.base import Envelope
from projections.deadletters import RawMessage
from projections.logidentity import Anchor, record_digest
from projections.unreadable import UnreadableBatch

Poison = tuple[RawMessage, str, str]  # message, error kind, error text


@dataclass(slots=True)
class DecodedBatch:
    """What one or more fetches yielded; ``ranges`` maps a partition to [first, next)."""

    generation: int
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    envelopes: list[Envelope] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    records: int = 0
    anchors: dict[TopicPartition, Anchor] = field(default_factory=dict)  # first record each

    def absorb(self, later: DecodedBatch) -> bool:
        """Append a later batch when its ranges continue ours; False if they do not."""
        for tp, (start, _) in later.ranges.items():
            if tp in self.ranges and self.ranges[tp][1] != start:
                return False
        for tp, (start, end) in later.ranges.items():
            self.ranges[tp] = (self.ranges[tp][0], end) if tp in self.ranges else (start, end)
        for tp, anchor in later.anchors.items():
            self.anchors.setdefault(tp, anchor)
        self.envelopes.extend(later.envelopes)
        self.poison.extend(later.poison)
        self.records += later.records
        return True


def decode_batch(
    family: str, generation: int, fetched: dict[TopicPartition, int],
    batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
) -> DecodedBatch:
    """Decode records at or after each partition's fetch position; advance the positions."""
    decoded = DecodedBatch(generation)
    for tp, records in batch.items():
        held = fetched.get(tp)
        if held is None:
            continue  # revoked while the fetch was in flight
        fresh = [r for r in records if r.offset >= held]
        if not fresh:
            continue
        decoded.ranges[tp] = (held, fresh[-1].offset + 1)
        decoded.anchors[tp] = Anchor(fresh[0].offset, record_digest(fresh[0]))
        fetched[tp] = fresh[-1].offset + 1
        decoded.records += len(fresh)
        _decode_records(family, fresh, decoded)
    return decoded


def _decode_records(
    family: str, records: Iterable[ConsumerRecord[Any, Any]], into: DecodedBatch
) -> None:
    for record in records:
        try:
            _decode_one(family, record, into)
        except Exception as exc:  # nothing one message holds may stop the partition
            into.poison.append((_raw(record), "invalid_event", f"{type(exc).__name__}: {exc}"))


def _decode_one(family: str, record: ConsumerRecord[Any, Any], into: DecodedBatch) -> None:
    if isinstance(record.value, UnreadableBatch):
        unreadable = record.value
        into.poison.append((
            RawMessage(record.topic, record.partition, unreadable.first_offset, None, None, ()),
            "unreadable_batch", unreadable.describe(record.topic, record.partition)))
        return
    try:
        event = parse_event(record.value)
    except EventDecodeError as exc:
        into.poison.append((_raw(record), getattr(exc, "reason", "invalid_event"), str(exc)))
        return
    if event.topic_family != family:
        into.poison.append((_raw(record), "wrong_topic",
                            f"{event.type} does not belong on {record.topic}"))
        return
    into.envelopes.append(Envelope(record.topic, record.partition, record.offset,
                                   record.key, event, record.value))


def _raw(record: ConsumerRecord[Any, Any]) -> RawMessage:
    value = record.value if isinstance(record.value, bytes) else None
    key = record.key if isinstance(record.key, bytes) else None
    return RawMessage(record.topic, record.partition, record.offset, key, value,
                      tuple(record.headers or ()))
