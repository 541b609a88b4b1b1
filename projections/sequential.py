"""SequentialProjection: event-by-event apply, each in a savepoint, for low-volume topics.

Key and catalog events are few and their order matters; any error on one event (but a
database outage) rolls back only that event's savepoint, and the event becomes a dead letter.
"""

from __future__ import annotations

from abc import abstractmethod

import asyncpg

from ledger.events import EventBase
from ledger.invalidation import Invalidation, merge
from projections.base import ApplyResult, Envelope, Failure, Projection
from projections.exceptions import HandlerError as HandlerError  # re-exported: keys, catalog
from projections.outage import is_outage


class SequentialProjection(Projection):
    async def apply(self, conn: asyncpg.Connection, batch: list[Envelope]) -> ApplyResult:
        changes: list[Invalidation] = []
        failures: list[Failure] = []
        applied = 0
        for envelope in batch:
            try:
                async with conn.transaction():
                    changes.append(await self.apply_one(conn, envelope.event))
            except Exception as exc:  # any error but an outage is this event's alone
                if is_outage(exc):
                    raise
                failures.append(Failure.of(envelope, "handler_error",
                                           f"{type(exc).__name__}: {exc}"))
                continue
            applied += 1
        return ApplyResult(applied, merge(changes), failures)

    @abstractmethod
    async def apply_one(self, conn: asyncpg.Connection, event: EventBase) -> Invalidation: ...
