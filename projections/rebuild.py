"""Rebuilder: replay a topic from its start into fresh tables, then swap them in atomically.

0. Refuse (``projections.rebuild_checks``) when the log no longer holds what the live tables
   were projected from: swapping in would make the loss permanent.
1. Create the projection's tables in a scratch schema (``LIKE ... INCLUDING ALL``; the
   tables of ``Projection.rebuild_deferred_indexes`` without their indexes).
2. Replay the topic from the log start into them (``search_path`` puts the scratch schema
   first, so the projection's own SQL writes there); the live tables keep serving reads and
   the live projector keeps running. Batches of 20,000; PostgreSQL applies one while the
   next is decoded. Then the deferred indexes are built, once over all rows.
3. Swap in ONE transaction: take the projection's advisory lock exclusively (live batches take
   it shared, so none is half-way), catch up to the live checkpoints, refuse if the rebuilt
   tables hold fewer events than the live ones, move the live tables out and the rebuilt ones
   in, restore index names, align the checkpoints, NOTIFY a full flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.db import connect
from ledger.invalidation import Invalidation
from ledger.settings import Settings
from projections.base import Envelope, Failure, Projection, lock_key
from projections.decoding import decode_record
from projections.exceptions import RebuildError
from projections.logidentity import LogProbe, Verdict
from projections.rebuild_checks import (
    PREFLIGHT_CHECKS,
    SWAP_CHECKS,
    LiveSide,
    LogFacts,
    SwapFacts,
    count_events,
    first_refusal,
    read_live,
)
from projections.storage import CheckpointRecorder, DeadLetterRecorder, notify, read_checkpoints

Progress = Callable[[int, int], None]  # (applied so far, total to replay)
_EXTRA_DDL = {
    "key_metadata": "ALTER TABLE {schema}.key_metadata ADD FOREIGN KEY (api_key_id) "
                    "REFERENCES {schema}.api_keys (id) ON DELETE CASCADE",
}


class Rebuilder:
    def __init__(self, projection: Projection, settings: Settings, *, dsn: str,
                 bootstrap_servers: str, batch_size: int = 20_000) -> None:
        self.projection = projection
        projection.rebuilding = True  # its apply() now writes the scratch copy only
        self.topic = projection.topic(settings)
        self._settings = settings
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self.scratch = f"rebuild_{projection.name}"
        self.positions: dict[TopicPartition, int] = {}
        self.applied = 0
        self.skipped = 0  # records that are dead letters (undecodable, wrong topic, failed)
        self._dead_letters = DeadLetterRecorder(projection.name)

    async def run(self, progress: Progress | None = None) -> int:
        """Replay and swap in; the events applied.

        Raises :class:`RebuildError` (one line; the live tables untouched) when a refusal
        check in ``projections.rebuild_checks`` finds the log no longer holds what the live
        tables were projected from.
        """
        conn = await connect(self._dsn, self._settings)  # with DB_STATEMENT_TIMEOUT
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        try:
            await consumer.start()  # inside: on failure the consumer and conn are closed too
            partitions = [TopicPartition(self.topic, p)
                          for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
            if not partitions:
                raise RebuildError(f"topic {self.topic} does not exist")
            live = await read_live(conn, self.projection.name, self.topic)  # before the log
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, starts[tp])
                self.positions[tp] = starts[tp]
            targets = await _high_watermarks(consumer, partitions)
            facts = LogFacts(self.projection.name, self.topic,
                             {tp.partition: offset for tp, offset in starts.items()},
                             {tp.partition: offset for tp, offset in targets.items()},
                             live.checkpoints, live.events, await self._verify(live))
            self._stop_if(await first_refusal(PREFLIGHT_CHECKS, facts))
            total = sum(targets[tp] - starts[tp] for tp in partitions)
            await self._rebuild(conn, consumer, targets, progress, total)
            return self.applied
        finally:
            await consumer.stop()
            await conn.close()

    async def _verify(self, live: LiveSide) -> dict[int, Verdict]:
        """Is each partition's log the one the live checkpoint's anchor names?"""
        probe = LogProbe(self._bootstrap)
        try:
            verdicts = await probe.check({TopicPartition(self.topic, p): anchor
                                          for p, anchor in live.anchors.items()})
        finally:
            await probe.close()
        return {tp.partition: verdict for tp, verdict in verdicts.items()}

    async def _rebuild(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer,
        targets: dict[TopicPartition, int], progress: Progress | None, total: int,
    ) -> None:
        for lock in self.projection.replay_locks:  # until the swap committed or failed
            await conn.execute("SELECT pg_advisory_lock_shared(hashtext($1))", lock)
        try:
            await self._create_scratch(conn)
            await conn.execute(f"SET search_path = {self.scratch}, public")
            await self._replay_until(conn, consumer, targets, progress, total)
            await self._build_indexes(conn)
            await self._swap(conn, consumer)
        except BaseException:
            await conn.execute("RESET search_path")
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.scratch} CASCADE")
            raise
        finally:
            for lock in self.projection.replay_locks:
                with contextlib.suppress(Exception):  # a lost connection released it anyway
                    await conn.execute("SELECT pg_advisory_unlock_shared(hashtext($1))", lock)

    def _stop_if(self, refusal: str | None) -> None:
        if refusal is not None:
            raise RebuildError(f"rebuild of {self.projection.name} refused, live tables "
                               f"untouched: {refusal}")

    async def _create_scratch(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP SCHEMA IF EXISTS {self.scratch} CASCADE")
        await conn.execute(f"CREATE SCHEMA {self.scratch}")
        for table in self.projection.tables():
            partitioned = await conn.fetchval(
                "SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass", f"public.{table}")
            suffix = " PARTITION BY RANGE (occurred_at)" if partitioned else ""
            like = ("INCLUDING ALL EXCLUDING INDEXES"  # built once at the end: _build_indexes
                    if table in self.projection.rebuild_deferred_indexes else "INCLUDING ALL")
            await conn.execute(f"CREATE TABLE {self.scratch}.{table} "
                               f"(LIKE public.{table} {like}){suffix}")
        for table in self.projection.tables():
            if table in _EXTRA_DDL:
                await conn.execute(_EXTRA_DDL[table].format(schema=self.scratch))

    async def _build_indexes(self, conn: asyncpg.Connection) -> None:
        """The live tables' indexes the replay went without, each built once over all rows,
        before the swap's exclusive lock (the live projector keeps running meanwhile)."""
        for table in self.projection.rebuild_deferred_indexes:
            for statement in await _index_ddl(conn, table, self.scratch):
                await conn.execute(statement)

    async def _replay_until(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer,
        targets: dict[TopicPartition, int], progress: Progress | None, total: int,
    ) -> None:
        """Apply every record below each partition's target offset.

        A partition is done when the consumer's position reaches the target, not when a
        record does: the last offsets of a log may hold records the replay skips (undecodable
        ones, tombstones) or none the consumer returns at all (transaction markers, records
        compacted away), and no later record would ever come to move the position past them.
        """
        pending = {tp for tp, end in targets.items() if self.positions[tp] < end}
        idle_polls = 0
        # PostgreSQL applies one batch while this decodes the next (the live worker's two
        # stages, in one loop): one at a time on the connection, awaited before the next.
        applying: asyncio.Task[None] | None = None
        try:
            while pending:
                envelopes, poison = await self._fetch_and_decode(consumer, targets, pending)
                moved = False
                for tp in sorted(pending):
                    # Past every record returned and every control batch or gap skipped.
                    position = min(await consumer.position(tp), targets[tp])
                    moved = moved or position > self.positions[tp]
                    self.positions[tp] = position
                    if position >= targets[tp]:
                        pending.discard(tp)
                        consumer.pause(tp)
                        # getmany moved past records we left unread; the swap's catch-up
                        # needs them
                        consumer.seek(tp, position)
                idle_polls = 0 if moved else idle_polls + 1
                if idle_polls > 30:
                    raise RebuildError(f"no records for 30s while replaying {sorted(pending)}")
                if envelopes or poison:
                    if applying is not None:
                        await applying
                    applying = asyncio.create_task(self._apply(conn, envelopes, poison))
                if progress is not None:
                    progress(sum(self.positions.values()), total)
            if applying is not None:
                await applying
        except BaseException:
            if applying is not None and not applying.done():
                applying.cancel()
                with contextlib.suppress(BaseException):
                    await applying
            raise

    async def _fetch_and_decode(
        self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int],
        pending: set[TopicPartition],
    ) -> tuple[list[Envelope], list[Failure]]:
        batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=self._batch_size)
        envelopes: list[Envelope] = []
        poison: list[Failure] = []
        for tp, records in batch.items():
            for record in records:
                if record.offset >= targets[tp]:
                    break
                # The live worker's decode path: what it dead-letters, a rebuild does too.
                decoded = decode_record(self.projection.name, record)
                if isinstance(decoded, Failure):
                    poison.append(decoded)
                else:
                    envelopes.append(decoded)
        return envelopes, poison

    async def _apply(
        self, conn: asyncpg.Connection, envelopes: list[Envelope], poison: list[Failure]
    ) -> None:
        """Apply to the scratch tables; dead letters go to the live ``dead_letters``.

        A dead letter the live worker already wrote is kept once (same projection, topic,
        partition and offset), so a rebuild adds only what the live worker never saw.
        """
        letters, applied = list(poison), 0
        if envelopes:
            await self.projection.prepare(conn, envelopes)
        async with conn.transaction():
            if envelopes:
                result = await self.projection.apply(conn, envelopes)
                applied = result.applied
                letters.extend(result.failures)
            await self._dead_letters.record(conn, letters)
        self.applied += applied
        self.skipped += len(letters)

    async def _swap(self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer) -> None:
        old = f"replaced_{self.projection.name}"
        await conn.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               lock_key(self.projection.name))
            live = await read_checkpoints(conn, projection=self.projection.name, topic=self.topic)
            targets = {TopicPartition(self.topic, c.partition): c.next_offset for c in live}
            behind = {tp: end for tp, end in targets.items() if self.positions.get(tp, 0) < end}
            for tp in behind:
                consumer.resume(tp)
            await self._replay_until(conn, consumer, behind, None, 0)
            # Under the exclusive lock the live tables cannot move: compare, then swap or not.
            name = self.projection.name
            self._stop_if(await first_refusal(SWAP_CHECKS, SwapFacts(
                name, self.topic, await count_events(conn, name, "public"),
                await count_events(conn, name, self.scratch))))
            await conn.execute("RESET search_path")
            await conn.execute(f"CREATE SCHEMA {old}")
            names = await _index_names(conn, self.projection.tables())
            for table in self.projection.tables():
                live_children = await _partitions(conn, "public", table)
                new_children = await _partitions(conn, self.scratch, table)
                for child in live_children:
                    await conn.execute(f"ALTER TABLE public.{child} SET SCHEMA {old}")
                await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {old}")
                await conn.execute(f"ALTER TABLE {self.scratch}.{table} SET SCHEMA public")
                for child in new_children:
                    await conn.execute(f"ALTER TABLE {self.scratch}.{child} SET SCHEMA public")
            await conn.execute(f"DROP SCHEMA {old} CASCADE")
            await conn.execute(f"DROP SCHEMA {self.scratch}")
            await _restore_index_names(conn, self.projection.tables(), names)
            await self.projection.after_swap(conn)
            # The live worker may be behind the rebuild: move its checkpoints up; its next
            # fenced update then fails, and it re-reads them (nothing is applied twice).
            await CheckpointRecorder(self.projection.name).raise_to(
                conn, self.topic, {tp.partition: at for tp, at in self.positions.items()})
            await notify(conn, Invalidation(flush_all=True))


async def _high_watermarks(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The log ends, from fetch responses (the embedded broker's ListOffsets can be wrong)."""
    for _ in range(50):
        await consumer.getmany(timeout_ms=200, max_records=1)
        marks = {tp: consumer.highwater(tp) for tp in partitions}
        if all(mark is not None for mark in marks.values()):
            for tp in partitions:  # the probe moved positions: go back to the start
                consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
            return {tp: int(mark) for tp, mark in marks.items() if mark is not None}
    raise RebuildError(f"no fetch response for every partition of {partitions[0].topic}")


async def _index_ddl(conn: asyncpg.Connection, table: str, schema: str) -> list[str]:
    """Statements that give ``schema.table`` the indexes and key constraints of the live
    ``public.table`` (on a partitioned table, for every partition)."""
    constraints = await conn.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname",
        f"public.{table}")
    indexes = await conn.fetch(
        "SELECT pg_get_indexdef(i.indexrelid) AS definition FROM pg_index i "
        "WHERE i.indrelid = $1::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
        f"public.{table}")
    statements = [f"ALTER TABLE {schema}.{table} ADD CONSTRAINT {row['conname']} "
                  f"{row['definition']}" for row in constraints]
    # "CREATE INDEX name ON ONLY public.table ..." (qualified or not, by search_path): the
    # same on the scratch table, without ONLY so that every partition gets it.
    target = re.compile(rf" ON (ONLY )?(public\.)?{re.escape(table)} ")
    statements += [target.sub(f" ON {schema}.{table} ", row["definition"], count=1)
                   for row in indexes]
    return statements


async def _partitions(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass", f"{schema}.{table}")
    return [row["relname"] for row in rows]


def _shape(definition: str) -> str:
    """An index definition without its own name and schema, to match old and new indexes."""
    return re.sub(r"INDEX \S+ ON (ONLY )?\S+?\.", "INDEX ON ", definition)


async def _index_names(conn: asyncpg.Connection, tables: tuple[str, ...]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = ANY($1::text[])", list(tables))
    return {_shape(row["indexdef"]): row["indexname"] for row in rows}


async def _restore_index_names(
    conn: asyncpg.Connection, tables: tuple[str, ...], names: dict[str, str]
) -> None:
    """Give rebuilt indexes the migration's names, so later migrations can refer to them."""
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = ANY($1::text[])", list(tables))
    for row in rows:
        wanted = names.get(_shape(row["indexdef"]))
        if wanted is not None and wanted != row["indexname"]:
            await conn.execute(f"ALTER INDEX public.{row['indexname']} RENAME TO {wanted}")
