"""Replaying dead letters after a fix or an upcaster landed (``ledger dlq replay``)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.db import connect
from ledger.events import parse_event
from ledger.exceptions import EventDecodeError
from ledger.invalidation import CHANNEL, encode
from ledger.settings import Settings, load_settings
from projections.base import Envelope, lock_key
from projections.deadletters import DeadLetter, list_dead_letters
from projections.registry import make_projection


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
        letters = await list_dead_letters(conn, pending_only=True, limit=1_000_000)
        if ids is not None:
            letters = [d for d in letters if d.id in set(ids)]
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
    try:
        event = parse_event(letter.value or b"")
    except EventDecodeError as exc:
        await _still_failing(conn, letter, getattr(exc, "reason", "invalid_event"), str(exc))
        return False
    if event.topic_family != projection.name:
        await _still_failing(conn, letter, "wrong_topic", f"{event.type} is not a "
                             f"{projection.name} event")
        return False
    envelope = Envelope(letter.topic, letter.partition, letter.offset, letter.key, event,
                        letter.value)
    await projection.prepare(conn, [envelope])
    async with conn.transaction():
        # As a worker's batch: a repair, a swap or a re-pricing must not run half-way through.
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                           lock_key(projection.name))
        result = await projection.apply(conn, [envelope])
        if result.failures:
            failure = result.failures[0]
            await _still_failing(conn, letter, failure.kind, failure.error)
            return False
        await conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = $1", letter.id)
        if not result.invalidation.is_empty():
            for payload in encode(result.invalidation):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    return True


async def _still_failing(
    conn: asyncpg.Connection, letter: DeadLetter, kind: str, error: str
) -> None:
    await conn.execute("UPDATE dead_letters SET error_kind = $2, error = $3 WHERE id = $1",
                       letter.id, kind, error[:4000])
