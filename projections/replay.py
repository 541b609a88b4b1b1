"""Replaying dead letters after a fix or an upcaster landed (``ledger dlq replay``)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.db import connect
from ledger.settings import Settings, load_settings
from projections.base import Failure, RawMessage, apply_resiliently, lock_key
from projections.decoding import decode_message
from projections.registry import make_projection
from projections.storage import (
    DeadLetter,
    list_dead_letters,
    mark_replayed,
    mark_still_failing,
    notify,
)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int
    failed: int


async def replay_dead_letters(
    dsn: str, *, ids: list[int] | None = None, settings: Settings | None = None
) -> ReplayReport:
    """Apply each pending dead letter that now decodes and applies; mark it replayed.

    ``settings`` (default: read from the environment) bound the connection's timeouts.

    Usage events are deduplicated by event_id, so replaying one that was also delivered
    again is harmless. A letter that still fails keeps its row with the new error.
    """
    conn = await connect(dsn, settings or load_settings())
    try:
        letters = await list_dead_letters(conn, pending_only=True, limit=1_000_000, ids=ids)
        replayed = failed = 0
        for letter in letters:
            if await _replay_one(conn, letter):
                replayed += 1
            else:
                failed += 1
        return ReplayReport(replayed, failed)
    finally:
        await conn.close()


async def _replay_one(conn: asyncpg.Connection, letter: DeadLetter) -> bool:
    projection = make_projection(letter.projection)
    # The live worker's decode path: a letter fails again for the same reasons.
    decoded = decode_message(projection.name, RawMessage(
        letter.topic, letter.partition, letter.offset, letter.key, letter.value))
    if isinstance(decoded, Failure):
        await mark_still_failing(conn, letter.id, decoded.kind, decoded.error)
        return False
    await projection.prepare(conn, [decoded])
    async with conn.transaction():
        # As a worker's batch: a repair, a swap or a re-pricing must not run half-way through.
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                           lock_key(projection.name))
        # With the live batch's net: an apply that raises (a bug, not an outage) is this
        # letter's new error, and the other letters are still replayed.
        result = await apply_resiliently(projection, conn, [decoded])
        if result.failures:
            failure = result.failures[0]
            await mark_still_failing(conn, letter.id, failure.kind, failure.error)
            return False
        await mark_replayed(conn, letter.id)
        await notify(conn, result.invalidation)
    return True
