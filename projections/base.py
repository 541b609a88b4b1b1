"""What every projection is: a name, a topic, and a set-based ``apply`` inside a transaction."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from ledger.events import EventBase
from ledger.invalidation import Invalidation, merge
from ledger.settings import Settings
from projections.exceptions import PartitionLostError
from projections.outage import is_outage

log = logging.getLogger("ledger.projector")


def lock_key(projection: str) -> str:
    """The advisory lock that live batches hold shared and a rebuild's swap exclusively."""
    return f"ledger.projection.{projection}"


class Envelope(NamedTuple):
    """One decoded Kafka message with where it came from.

    A NamedTuple rather than a frozen dataclass: one is built per message on the projector's
    hot path, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field)
    took three times as long.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event: EventBase
    value: bytes | None = None  # the raw body, kept for dead-lettering


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Kafka message as it was on the log, kept whole in a dead letter."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()  # Kafka allows a header without a value


@dataclass(frozen=True, slots=True)
class Failure:
    """One message that could not be decoded or applied, and why: a dead letter to be.

    The one type for both: the decoder's poison has no ``envelope`` (no event decoded), a
    projection's failure has one (:meth:`of`).
    """

    message: RawMessage
    kind: str
    error: str
    envelope: Envelope | None = None

    @classmethod
    def of(cls, envelope: Envelope, kind: str, error: str) -> Failure:
        """A decoded event that could not be applied."""
        message = RawMessage(envelope.topic, envelope.partition, envelope.offset,
                             envelope.key, envelope.value)
        return cls(message, kind, error, envelope)


@dataclass(slots=True)
class ApplyResult:
    applied: int
    invalidation: Invalidation
    failures: list[Failure]
    repriced: int = 0  # usage events whose cost this batch changed (projections.repricing)


class Projection(ABC):
    """Applies decoded events to its tables, inside the caller's transaction.

    ``apply`` must not commit; the runner commits the projected rows together with the
    checkpoints and dead letters. A handler error on one event is returned as a Failure (the
    event becomes a dead letter) and the rest of the batch still applies.
    """

    name: str
    # Set by the Rebuilder: apply() writes a scratch copy, and must leave live tables alone.
    rebuilding: bool = False
    # Advisory locks a rebuild of this projection holds shared while it replays and swaps.
    replay_locks: tuple[str, ...] = ()
    # Tables a rebuild fills without their indexes and indexes once after the replay:
    # only tables that nothing the projection runs while replaying looks up or arbitrates on.
    rebuild_deferred_indexes: tuple[str, ...] = ()

    @abstractmethod
    def topic(self, settings: Settings) -> str: ...

    @abstractmethod
    async def apply(self, conn: asyncpg.Connection, batch: list[Envelope]) -> ApplyResult: ...

    async def prepare(  # noqa: B027 - optional hook, empty by default
        self, conn: asyncpg.Connection, batch: list[Envelope]
    ) -> None:
        """Work that must happen outside the batch transaction (e.g. DDL); default none."""

    def tables(self) -> tuple[str, ...]:
        """The tables this projection owns (what a rebuild replaces)."""
        return ()

    async def after_swap(  # noqa: B027 - optional hook, empty by default
        self, conn: asyncpg.Connection
    ) -> None:
        """Work a rebuild does in its swap transaction once the rebuilt tables are live."""


async def apply_resiliently(
    projection: Projection, conn: asyncpg.Connection, envelopes: list[Envelope]
) -> ApplyResult:
    """``projection.apply`` in a savepoint; if it raises (but for an outage), event by event.

    A projection already turns its events' errors into Failures; this is the net under a
    projection whose set-based apply raised anyway, so one event never fails the batch.
    """

    try:
        async with conn.transaction():
            return await projection.apply(conn, envelopes)
    except Exception as exc:
        if is_outage(exc) or isinstance(exc, PartitionLostError):
            raise
        log.warning("%s: batch apply failed (%s: %s); applying its %d events one by one",
                    projection.name, type(exc).__name__, exc, len(envelopes))
    results = []
    for envelope in envelopes:
        try:
            async with conn.transaction():
                results.append(await projection.apply(conn, [envelope]))
        except Exception as exc:
            if is_outage(exc):
                raise
            results.append(ApplyResult(0, Invalidation(), [Failure.of(
                envelope, "handler_error", f"{type(exc).__name__}: {exc}")]))
    return ApplyResult(sum(r.applied for r in results),
                       merge([r.invalidation for r in results]),
                       [f for r in results for f in r.failures],
                       sum(r.repriced for r in results))
