"""Decoding: Kafka records -> envelopes and poison, with the offset range of each partition.

One decode -> topic-family check (``_event_of``) behind two doors: :func:`decode_record` for
a Kafka record (the live worker's :func:`decode_batch`, a rebuild's replay), which builds no
``RawMessage`` unless the record becomes a dead letter, and :func:`decode_message` for a
message already kept whole (``ledger dlq replay``). So a message is a dead letter (and why)
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ledger.codec import parse_event
from ledger.events import EventBase
from ledger.exceptions import EventDecodeError
from projections.base import Envelope, Failure, RawMessage
from projections.logidentity import Anchor, record_digest
from projections.unreadable import UnreadableBatch


@dataclass(slots=True)
class DecodedBatch:
    """What one or more fetches yielded; ``ranges`` maps a partition to [first, next)."""

    generation: int
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    envelopes: list[Envelope] = field(default_factory=list)
    poison: list[Failure] = field(default_factory=list)  # undecodable: dead letters
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
        decoded = decode_record(family, record)
        if isinstance(decoded, Failure):
            into.poison.append(decoded)
        else:
            into.envelopes.append(decoded)


def decode_record(family: str, record: ConsumerRecord[Any, Any]) -> Envelope | Failure:
    """A Kafka record as an envelope of ``family``, or the dead letter it becomes."""
    value = record.value
    if isinstance(value, UnreadableBatch):
        return Failure(
            RawMessage(record.topic, record.partition, value.first_offset, None, None),
            "unreadable_batch", value.describe(record.topic, record.partition))
    value = value if isinstance(value, bytes) else None
    key = record.key if isinstance(record.key, bytes) else None
    decoded = _event_of(family, record.topic, value)
    if isinstance(decoded, EventBase):
        # The hot path builds no RawMessage: only a dead letter needs one (with headers).
        return Envelope(record.topic, record.partition, record.offset, key, decoded, value)
    return Failure(RawMessage(record.topic, record.partition, record.offset, key, value,
                              tuple(record.headers or ())), *decoded)


def decode_message(family: str, message: RawMessage) -> Envelope | Failure:
    """Decode -> topic-family check -> envelope: the one path for workers, rebuilds, replays.

    Whatever the message holds, the answer is an envelope or a Failure (never an exception):
    nothing one message holds may stop a partition.
    """
    decoded = _event_of(family, message.topic, message.value)
    if isinstance(decoded, EventBase):
        return Envelope(message.topic, message.partition, message.offset, message.key, decoded,
                        message.value)
    return Failure(message, *decoded)


def _event_of(family: str, topic: str, value: bytes | None) -> EventBase | tuple[str, str]:
    """The event a message body holds, or the (dead-letter kind, error) it is refused with."""
    try:
        event = parse_event(value)  # None (a tombstone) is an EventDecodeError
    except EventDecodeError as exc:
        return getattr(exc, "reason", "invalid_event"), str(exc)
    except Exception as exc:
        return "invalid_event", f"{type(exc).__name__}: {exc}"
    if event.topic_family != family:
        return "wrong_topic", f"{event.type} does not belong on {topic}"
    return event
