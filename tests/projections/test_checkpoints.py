"""The fenced checkpoint: it moves only forward and only from the offset the worker holds."""

from __future__ import annotations

import asyncpg
import pytest

from projections.exceptions import PartitionLostError
from projections.logidentity import Anchor
from projections.storage import CheckpointRecorder, Held


def _offsets(held: dict[int, Held]) -> dict[int, int]:
    return {partition: h.next_offset for partition, h in held.items()}


async def test_fenced_advance_rolls_back_stale_work(pg_dsn: str) -> None:
    recorder = CheckpointRecorder("usage")
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert _offsets(await recorder.load(conn, "t", {0: 0, 1: 5})) == {0: 0, 1: 5}
        assert _offsets(await recorder.load(conn, "t", {0: 99})) == {0: 0}  # existing rows win
        async with conn.transaction():
            await recorder.advance(conn, "t", 0, 0, 10)
        # A worker that still believes it holds offset 0 lost the partition to this one.
        async def stale_batch() -> None:
            async with conn.transaction():
                await conn.execute("CREATE TABLE projected_by_stale_worker (x int)")
                await recorder.advance(conn, "t", 0, 0, 20)

        with pytest.raises(PartitionLostError):
            await stale_batch()
        assert await conn.fetchval("SELECT to_regclass('projected_by_stale_worker')") is None
        assert _offsets(await recorder.load(conn, "t", {0: 0})) == {0: 10}
        with pytest.raises(ValueError, match="only move forward"):
            await recorder.advance(conn, "t", 0, 10, 9)
        assert await recorder.reset(conn, "t", 0, 10, 0) is True
        assert await recorder.reset(conn, "t", 0, 10, 0) is False  # someone else moved it
    finally:
        await conn.close()


async def test_the_first_batch_anchors_the_log_and_a_reset_forgets_it(pg_dsn: str) -> None:
    recorder = CheckpointRecorder("usage")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await recorder.load(conn, "t", {0: 0})
        await recorder.advance(conn, "t", 0, 0, 10, Anchor(0, b"first"))
        await recorder.advance(conn, "t", 0, 10, 20, Anchor(10, b"later"))  # kept: first wins
        assert (await recorder.load(conn, "t", {0: 0}))[0] == Held(20, Anchor(0, b"first"))
        assert await recorder.reset(conn, "t", 0, 20, 0) is True
        assert (await recorder.load(conn, "t", {0: 0}))[0] == Held(0, None)
    finally:
        await conn.close()
