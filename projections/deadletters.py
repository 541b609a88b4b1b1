"""DeadLetterRecorder: poison messages kept whole, with the reason, in the batch transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # Kafka allows a header without a value


@dataclass(frozen=True, slots=True)
class DeadLetter:
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
    def __init__(self, projection: str) -> None:
        self.projection = projection

    async def record(
        self, conn: asyncpg.Connection, items: list[tuple[RawMessage, str, str]]
    ) -> None:
        """Insert (message, error_kind, error) rows; a re-delivered offset is kept once."""
        if not items:
            return
        await conn.executemany(
            'INSERT INTO dead_letters (projection, topic, partition, "offset", key, value, '
            "headers, error_kind, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            'ON CONFLICT (projection, topic, partition, "offset") DO NOTHING',
            [
                (self.projection, m.topic, m.partition, m.offset, m.key, m.value,
                 json.dumps([[_text(k), None if v is None else _text(bytes(v))]
                             for k, v in m.headers]),
                 kind, _text(error)[:4000])
                for m, kind, error in items
            ],
        )


async def list_dead_letters(
    conn: asyncpg.Connection, *, projection: str | None = None, pending_only: bool = True,
    limit: int = 100,
) -> list[DeadLetter]:
    rows = await conn.fetch(
        'SELECT id, projection, topic, partition, "offset", key, value, error_kind, error, '
        "created_at, replayed_at FROM dead_letters "
        "WHERE ($1::text IS NULL OR projection = $1) AND (NOT $2 OR replayed_at IS NULL) "
        "ORDER BY id LIMIT $3",
        projection, pending_only, limit,
    )
    return [DeadLetter(**dict(row)) for row in rows]


async def count_by_reason(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    rows = await conn.fetch(
        "SELECT projection, error_kind, count(*) AS n FROM dead_letters "
        "WHERE replayed_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2")
    return [(row["projection"], row["error_kind"], row["n"]) for row in rows]
