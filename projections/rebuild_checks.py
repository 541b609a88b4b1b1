"""Why a rebuild must not be swapped in: the refusal checks, and the facts they look at.

A rebuild replaces the live tables with what the log holds now. When the log has lost
records (retention, DeleteRecords, compaction, a broker that lost its storage, a recreated
topic), swapping the rebuilt tables in would make that loss permanent. Each check returns one
line saying why the rebuild is refused, or None; the first refusal stops the rebuild with the
live tables untouched.

``PREFLIGHT_CHECKS`` run before anything is replayed, on :class:`LogFacts`. A check that needs
more facts adds a field to ``LogFacts``, read in :func:`read_live` (PostgreSQL) or by the
Rebuilder (the log), as the log-identity verdicts are (projections.logidentity).
``SWAP_CHECKS`` run inside the swap
transaction, once the rebuilt tables have caught up with the live checkpoints, on
:class:`SwapFacts`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from projections.logidentity import Anchor, Verdict
from projections.storage import read_checkpoints

# For each projection, a table with one row per distinct event applied that no later event
# deletes: its row count is a lower bound of the events the projection's tables hold.
EVENT_TABLES = {
    "usage": "usage_event_ids",  # every usage event, claimed once by event_id
    "keys": "api_keys",  # one row per created key; revoking keeps the row
    "catalog": "model_price_history",  # one row per (model, valid_from) ever upserted
}


@dataclass(frozen=True, slots=True)
class LiveSide:
    checkpoints: dict[int, int]  # partition -> the live projection's next offset
    events: int  # lower bound of the events the live tables hold (EVENT_TABLES)
    anchors: dict[int, Anchor]  # partition -> the record its checkpoint's log began with


@dataclass(frozen=True, slots=True)
class LogFacts:
    """The log and the live projection, as read before a replay."""

    projection: str
    topic: str
    starts: dict[int, int]  # partition -> first offset the log still holds
    ends: dict[int, int]  # partition -> log end (a fetch high watermark)
    checkpoints: dict[int, int]  # partition -> the live projection's next offset
    live_events: int  # lower bound of the events the live tables hold (EVENT_TABLES)
    # partition -> is the log the one the live checkpoint's anchor names (logidentity)?
    anchors: dict[int, Verdict]


@dataclass(frozen=True, slots=True)
class SwapFacts:
    """The rebuilt and the live tables at the swap, under the projection's exclusive lock."""

    projection: str
    topic: str
    live_events: int
    rebuilt_events: int


PreflightCheck = Callable[[LogFacts], Awaitable[str | None]]
SwapCheck = Callable[[SwapFacts], Awaitable[str | None]]


async def count_events(conn: asyncpg.Connection, projection: str, schema: str) -> int:
    """The lower bound of events held by ``projection``'s tables in ``schema``."""
    return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.{EVENT_TABLES[projection]}"))


async def read_live(conn: asyncpg.Connection, projection: str, topic: str) -> LiveSide:
    """The live checkpoints and events, read BEFORE the log's starts and ends.

    A live worker moves a checkpoint only up to a log end it has seen, so checkpoints read
    first are within the ends read after them unless the log lost records; read the other
    way round, traffic arriving in between would look like a lost log.
    """
    live = await read_checkpoints(conn, projection=projection, topic=topic)
    return LiveSide({c.partition: c.next_offset for c in live},
                    await count_events(conn, projection, "public"),
                    {c.partition: c.anchor for c in live if c.anchor is not None})


async def log_starts_at_offset_zero(facts: LogFacts) -> str | None:
    """Records before a log's start were deleted (retention, DeleteRecords): gone for good."""
    moved = {p: start for p, start in sorted(facts.starts.items()) if start > 0}
    if not moved:
        return None
    partition, start = next(iter(moved.items()))
    others = f" (and {len(moved) - 1} more partitions)" if len(moved) > 1 else ""
    return (f"{facts.topic}[{partition}] starts at offset {start}, not 0{others}: the broker "
            "deleted the records before it (retention or DeleteRecords), so a rebuild would "
            "lose them")


async def checkpoints_within_the_log(facts: LogFacts) -> str | None:
    """A live checkpoint past the log end: the log lost records the live tables hold."""
    for partition, checkpoint in sorted(facts.checkpoints.items()):
        end = facts.ends.get(partition)
        if end is None:
            return (f"{facts.topic} has no partition {partition}, which the live {facts.projection}"
                    f" projection read up to offset {checkpoint}: the topic was recreated")
        if checkpoint > end:
            return (f"{facts.topic}[{partition}] ends at offset {end}, before the live "
                    f"checkpoint {checkpoint}: the log lost records the live tables hold "
                    "(broker reset or topic recreated)")
    return None


async def log_is_the_live_one(facts: LogFacts) -> str | None:
    """The record each live checkpoint began with must still be at its offset."""
    for partition, verdict in sorted(facts.anchors.items()):
        if verdict is Verdict.DIFFERENT:
            return (f"{facts.topic}[{partition}] is not the log the live {facts.projection} "
                    "checkpoints came from (another record at their anchor offset): the broker "
                    "lost its log or the topic was recreated")
        if verdict is Verdict.UNKNOWN:
            return (f"{facts.topic}[{partition}]: the broker did not answer whether this is the "
                    "log the live checkpoints came from; try again")
    return None


async def log_holds_the_live_events(facts: LogFacts) -> str | None:
    """Each event takes an offset, so a log with fewer records cannot rebuild them all."""
    records = sum(facts.ends[p] - start for p, start in facts.starts.items())
    if records >= facts.live_events:
        return None
    return (f"{facts.topic} holds {records} records but the live {facts.projection} tables "
            f"hold {facts.live_events} events: a rebuild would lose at least "
            f"{facts.live_events - records} of them")


async def rebuilt_holds_the_live_events(facts: SwapFacts) -> str | None:
    """Duplicates and poison fill offsets too: count what the replay actually built."""
    if facts.rebuilt_events >= facts.live_events:
        return None
    return (f"the rebuilt {facts.projection} tables would hold {facts.rebuilt_events} events "
            f"but the live ones hold {facts.live_events}: {facts.topic} no longer has "
            f"{facts.live_events - facts.rebuilt_events} of them")


PREFLIGHT_CHECKS: list[PreflightCheck] = [
    log_starts_at_offset_zero,
    checkpoints_within_the_log,
    log_is_the_live_one,
    log_holds_the_live_events,
]
SWAP_CHECKS: list[SwapCheck] = [rebuilt_holds_the_live_events]


Facts = TypeVar("Facts", LogFacts, SwapFacts)


async def first_refusal(
    checks: list[Callable[[Facts], Awaitable[str | None]]], facts: Facts
) -> str | None:
    for check in checks:
        refusal = await check(facts)
        if refusal is not None:
            return refusal
    return None
