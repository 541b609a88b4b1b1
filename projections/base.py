"""What every projection is: a name, a topic, and a set-based ``apply`` inside a transaction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import asyncpg

from ledger.events import EventBase
from ledger.invalidation import Invalidation
from ledger.settings import Settings


def lock_key(projection: str) -> str:
    """The advisory lock that live batches hold shared and a rebuild's swap exclusively."""
    return f"ledger.projection.{projection}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded Kafka message with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event: EventBase
    value: bytes | None = None  # the raw body, kept for dead-lettering


@dataclass(frozen=True, slots=True)
class Failure:
    """One message that could not be applied, and why; it becomes a dead letter."""

    envelope: Envelope
    kind: str
    error: str


@dataclass(slots=True)
class ApplyResult:
    applied: int
    invalidation: Invalidation
    failures: list[Failure]


class Projection(ABC):
    """Applies decoded events to its tables, inside the caller's transaction.

    ``apply`` must not commit; the runner commits the projected rows together with the
    checkpoints and dead letters. A handler error on one event is returned as a Failure (the
    event becomes a dead letter) and the rest of the batch still applies.
    """

    name: str

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
