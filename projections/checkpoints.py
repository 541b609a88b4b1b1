"""CheckpointRecorder: each partition's next offset, stored beside the projected rows.

The update is fenced: it moves a checkpoint only from the offset this worker believes it
holds. Zero rows updated means another worker advanced it (it owns the partition now), so
the caller's transaction must roll back rather than record stale work. Beside the offset it
keeps the log's anchor (see projections.logidentity).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projections.exceptions import PartitionLostError
from projections.logidentity import Anchor


class CheckpointRecorder:
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


@dataclass(frozen=True, slots=True)
class Held:
    next_offset: int
    anchor: Anchor | None


def _anchor(row: asyncpg.Record) -> Anchor | None:
    if row["anchor_offset"] is None or row["anchor_digest"] is None:
        return None
    return Anchor(row["anchor_offset"], bytes(row["anchor_digest"]))
