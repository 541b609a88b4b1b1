"""CheckpointRecorder: each partition's next offset, stored beside the projected rows.

The update is fenced: it moves a checkpoint only from the offset this worker believes it
holds. Zero rows updated means another worker advanced it (it owns the partition now), so
the caller's transaction must roll back rather than record stale work.
"""

from __future__ import annotations

import asyncpg

from projections.exceptions import PartitionLostError


class CheckpointRecorder:
    def __init__(self, projection: str) -> None:
        self.projection = projection

    async def load(
        self, conn: asyncpg.Connection, topic: str, starts: dict[int, int]
    ) -> dict[int, int]:
        """Checkpoints of the given partitions; missing ones are created at ``starts``."""
        await conn.executemany(
            "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(self.projection, topic, p, offset) for p, offset in starts.items()],
        )
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM projection_checkpoints "
            "WHERE projection = $1 AND topic = $2 AND partition = ANY($3::int[])",
            self.projection, topic, list(starts),
        )
        return {row["partition"]: row["next_offset"] for row in rows}

    async def advance(
        self, conn: asyncpg.Connection, topic: str, partition: int, expected: int, next_offset: int
    ) -> None:
        """Move ``expected`` -> ``next_offset`` or raise PartitionLostError (roll back)."""
        if next_offset < expected:
            raise ValueError(f"checkpoint may only move forward ({expected} -> {next_offset})")
        status = await conn.execute(
            "UPDATE projection_checkpoints SET next_offset = $5, updated_at = now() "
            "WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
            self.projection, topic, partition, expected, next_offset,
        )
        if status != "UPDATE 1":
            raise PartitionLostError(
                f"{self.projection}: {topic}[{partition}] checkpoint is no longer {expected}; "
                "another worker owns the partition"
            )

    async def reset(
        self, conn: asyncpg.Connection, topic: str, partition: int, expected: int, to: int
    ) -> bool:
        """Move a checkpoint back after a broker reset; False if another worker moved it."""
        status = await conn.execute(
            "UPDATE projection_checkpoints SET next_offset = $5, updated_at = now() "
            "WHERE projection = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
            self.projection, topic, partition, expected, to,
        )
        return bool(status == "UPDATE 1")
