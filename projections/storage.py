"""Storage: every statement on ``projection_checkpoints``, ``dead_letters`` and the
invalidation channel. Workers, rebuilds, replays, status and the operator shell call these
functions; no other module writes SQL against those tables or calls ``pg_notify``.

Checkpoints are fenced: :meth:`CheckpointRecorder.advance` moves a checkpoint only from the
offset this worker believes it holds. Zero rows updated means another worker advanced it (it
owns the partition now), so the caller's transaction must roll back rather than record stale
work. Beside the offset a checkpoint keeps the log's anchor (see projections.logidentity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ledger.invalidation import CHANNEL, Invalidation, encode
from projections.base import Failure
from projections.exceptions import PartitionLostError
from projections.logidentity import Anchor

_MAX_ERROR_CHARS = 4000

# -- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    next_offset: int
    anchor: Anchor | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    projection: str
    topic: str
    partition: int
    next_offset: int
    anchor: Anchor | None


class CheckpointRecorder:
    """One projection's checkpoints, as its live worker moves them."""

    def __init__(self, projection: str) -> None:
        self.projection = projection

    async def load(
        self, conn: asyncpg.Connection, topic: str, starts: dict[int, int]
    ) -> dict[int, Held]:
        """Checkpoints of the given partitions; missing ones are created at ``starts``."""
        await conn.executemany(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(self.projection, topic, p, offset) for p, offset in starts.items()],
        )
        rows = await conn.fetch(
            "SELECT partition, next_offset, anchor_offset, anchor_digest "
            "FROM projection_checkpoints "
            "WHERE projection = $1 AND topic = $2 AND partition = ANY($3::int[])",
            self.projection, topic, list(starts),
        )
        return {row["partition"]: Held(row["next_offset"], _anchor(row)) for row in rows}

    async def advance(
        self, conn: asyncpg.Connection, topic: str, partition: int, expected: int,
        next_offset: int, anchor: Anchor | None = None,
    ) -> None:
        """Move ``expected`` -> ``next_offset`` or raise PartitionLostError (roll back).

        ``anchor`` is remembered only while the checkpoint has none (its first batch).
        """
        if next_offset < expected:
            raise ValueError(f"checkpoint may only move forward ({expected} -> {next_offset})")
        status = await conn.execute(
            "UPDATE projection_checkpoints SET next_offset = $5, updated_at = now(), "
            "anchor_digest = CASE WHEN anchor_offset IS NULL THEN $7 ELSE anchor_digest END, "
            "anchor_offset = coalesce(anchor_offset, $6) "
            "WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
            self.projection, topic, partition, expected, next_offset,
            None if anchor is None else anchor.offset, None if anchor is None else anchor.digest,
        )
        if status != "UPDATE 1":
            raise PartitionLostError(
                f"{self.projection}: {topic}[{partition}] checkpoint is no longer {expected}; "
                "another worker owns the partition"
            )

    async def reset(
        self, conn: asyncpg.Connection, topic: str, partition: int, expected: int, to: int
    ) -> bool:
        """Move a checkpoint back to a new log's start, forgetting the old log's anchor.

        False if another worker moved it meanwhile.
        """
        status = await conn.execute(
            "UPDATE projection_checkpoints SET next_offset = $5, updated_at = now(), "
            "anchor_offset = NULL, anchor_digest = NULL "
            "WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
            self.projection, topic, partition, expected, to,
        )
        return bool(status == "UPDATE 1")

    async def reanchor(
        self, conn: asyncpg.Connection, topic: str, partition: int, anchor: Anchor
    ) -> None:
        """Forget an anchor whose record was deleted; the next batch sets a new one."""
        await conn.execute(
            "UPDATE projection_checkpoints SET anchor_offset = NULL, anchor_digest = NULL "
            "WHERE projection = $1 AND topic = $2 AND partition = $3 AND anchor_offset = $4",
            self.projection, topic, partition, anchor.offset)

    async def raise_to(
        self, conn: asyncpg.Connection, topic: str, positions: dict[int, int]
    ) -> None:
        """Move checkpoints up to ``positions`` (never down), creating missing ones.

        Unfenced on purpose: a rebuild's swap calls it under the projection's exclusive lock,
        and the live worker's next fenced update then fails, so it re-reads them.
        """
        await conn.executemany(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) DO UPDATE"
            " SET next_offset = greatest(projection_checkpoints.next_offset, $4),"
            " updated_at = now()",
            [(self.projection, topic, p, offset) for p, offset in sorted(positions.items())])


async def read_checkpoints(
    conn: asyncpg.Connection, *, projection: str | None = None, topic: str | None = None
) -> list[Checkpoint]:
    """Stored checkpoints (of one projection and topic, or all), ordered."""
    rows = await conn.fetch(
        "SELECT projection, topic, partition, next_offset, anchor_offset, anchor_digest "
        "FROM projection_checkpoints "
        "WHERE ($1::text IS NULL OR projection = $1) AND ($2::text IS NULL OR topic = $2) "
        "ORDER BY projection, topic, partition", projection, topic)
    return [Checkpoint(row["projection"], row["topic"], row["partition"], row["next_offset"],
                       _anchor(row)) for row in rows]


async def projected_up_to(conn: asyncpg.Connection, projection: str, topic: str) -> int:
    """The sum of a projection's checkpoints on ``topic``: records it has read, in all."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints "
        "WHERE projection = $1 AND topic = $2", projection, topic)
    return int(value)


def _anchor(row: asyncpg.Record) -> Anchor | None:
    if row["anchor_offset"] is None or row["anchor_digest"] is None:
        return None
    return Anchor(row["anchor_offset"], bytes(row["anchor_digest"]))


# -- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stored dead letter, as ``ledger dlq list`` shows it and ``dlq replay`` retries it."""

    id: int
    projection: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error_kind: str
    error: str
    created_at: datetime
    replayed_at: datetime | None


def _text(value: str | bytes) -> str:
    """Text PostgreSQL can store (no NUL, valid UTF-8), whatever a message carried."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.replace("\x00", "\\x00")


class DeadLetterRecorder:
    """Writes one projection's failures, in the caller's (batch) transaction."""

    def __init__(self, projection: str) -> None:
        self.projection = projection

    async def record(self, conn: asyncpg.Connection, failures: list[Failure]) -> None:
        """Insert the failures whole, with the reason; a re-delivered offset is kept once."""
        if not failures:
            return
        await conn.executemany(
            'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, '
            "headers, error_kind, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            'ON CONFLICT (projection, topic, partition, "offset") DO NOTHING',
            [
                (self.projection, m.topic, m.partition, m.offset, m.key, m.value,
                 json.dumps([[_text(k), None if v is None else _text(bytes(v))]
                             for k, v in m.headers]),
                 f.kind, _text(f.error)[:_MAX_ERROR_CHARS])
                for f in failures for m in (f.message,)
            ],
        )


async def list_dead_letters(
    conn: asyncpg.Connection, *, projection: str | None = None, pending_only: bool = True,
    limit: int = 100, ids: list[int] | None = None,
) -> list[DeadLetter]:
    """Dead letters oldest first; only these ``ids`` when given."""
    rows = await conn.fetch(
        'SELECT id, projection, topic, partition, "offset", key, value, error_kind, error, '
        "created_at, replayed_at FROM dead_letters "
        "WHERE ($1::text IS NULL OR projection = $1) AND (NOT $2 OR replayed_at IS NULL) "
        "AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[])) "
        "ORDER BY id LIMIT $3",
        projection, pending_only, limit, ids,
    )
    return [DeadLetter(**dict(row)) for row in rows]


async def count_by_reason(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """Pending dead letters as (projection, error kind, count)."""
    rows = await conn.fetch(
        "SELECT projection, error_kind, count(*) AS n FROM dead_letters "
        "WHERE replayed_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2")
    return [(row["projection"], row["error_kind"], row["n"]) for row in rows]


async def count_since(conn: asyncpg.Connection, since: datetime) -> list[tuple[str, int]]:
    """Dead letters written since ``since`` as (error kind, count), most frequent first."""
    rows = await conn.fetch(
        "SELECT error_kind, count(*) AS n FROM dead_letters WHERE created_at >= $1 "
        "GROUP BY 1 ORDER BY 2 DESC, 1", since)
    return [(row["error_kind"], row["n"]) for row in rows]


async def mark_replayed(conn: asyncpg.Connection, letter_id: int) -> None:
    await conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = $1", letter_id)


async def mark_still_failing(
    conn: asyncpg.Connection, letter_id: int, kind: str, error: str
) -> None:
    """A replay failed again: keep the letter pending, with the new reason."""
    await conn.execute("UPDATE dead_letters SET error_kind = $2, error = $3 WHERE id = $1",
                       letter_id, kind, _text(error)[:_MAX_ERROR_CHARS])


# -- notifications -----------------------------------------------------------------------------


async def notify(conn: asyncpg.Connection, change: Invalidation) -> None:
    """NOTIFY the read models of ``change``; PostgreSQL delivers it when the caller commits."""
    if change.is_empty():
        return
    for payload in encode(change):
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
