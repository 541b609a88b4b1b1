"""Rebuilder: replay a topic from its start into fresh tables, then swap them in atomically.

1. Create the projection's tables in a scratch schema (``LIKE ... INCLUDING ALL``).
2. Replay the topic from the log start into them (``search_path`` puts the scratch schema
   first, so the projection's own SQL writes there); the live tables keep serving reads and
   the live projector keeps running.
3. Swap in ONE transaction: take the projection's advisory lock exclusively (live batches take
   it shared, so none is half-way), catch up to the live checkpoints, move the live tables out
   and the rebuilt ones in, restore index names, align the checkpoints, NOTIFY a full flush.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.db import connect
from ledger.events import parse_event
from ledger.exceptions import EventDecodeError
from ledger.invalidation import CHANNEL, Invalidation, encode
from ledger.settings import Settings
from projections.base import Envelope, Projection, lock_key
from projections.exceptions import RebuildError

Progress = Callable[[int, int], None]  # (applied so far, total to replay)
_EXTRA_DDL = {
    "key_metadata": "ALTER TABLE {schema}.key_metadata ADD FOREIGN KEY (api_key_id) "
                    "REFERENCES {schema}.api_keys (id) ON DELETE CASCADE",
}


class Rebuilder:
    def __init__(self, projection: Projection, settings: Settings, *, dsn: str,
                 bootstrap_servers: str, batch_size: int = 5000) -> None:
        self.projection = projection
        self.topic = projection.topic(settings)
        self._settings = settings
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self.scratch = f"rebuild_{projection.name}"
        self.positions: dict[TopicPartition, int] = {}
        self.applied = 0
        self.skipped = 0

    async def run(self, progress: Progress | None = None) -> int:
        conn = await connect(self._dsn, self._settings)  # with DB_STATEMENT_TIMEOUT
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        try:
            await consumer.start()  # inside: on failure the consumer and conn are closed too
            await self._create_scratch(conn)
            await conn.execute(f"SET search_path = {self.scratch}, public")
            partitions = [TopicPartition(self.topic, p)
                          for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
            if not partitions:
                raise RebuildError(f"topic {self.topic} does not exist")
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, starts[tp])
                self.positions[tp] = starts[tp]
            targets = await _high_watermarks(consumer, partitions)
            total = sum(targets[tp] - starts[tp] for tp in partitions)
            await self._replay_until(conn, consumer, targets, progress, total)
            await self._swap(conn, consumer)
            return self.applied
        except BaseException:
            await conn.execute("RESET search_path")
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.scratch} CASCADE")
            raise
        finally:
            await consumer.stop()
            await conn.close()

    async def _create_scratch(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP SCHEMA IF EXISTS {self.scratch} CASCADE")
        await conn.execute(f"CREATE SCHEMA {self.scratch}")
        for table in self.projection.tables():
            partitioned = await conn.fetchval(
                "SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass", f"public.{table}")
            suffix = " PARTITION BY RANGE (occurred_at)" if partitioned else ""
            await conn.execute(f"CREATE TABLE {self.scratch}.{table} "
                               f"(LIKE public.{table} INCLUDING ALL){suffix}")
        for table in self.projection.tables():
            if table in _EXTRA_DDL:
                await conn.execute(_EXTRA_DDL[table].format(schema=self.scratch))

    async def _replay_until(
        self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer,
        targets: dict[TopicPartition, int], progress: Progress | None, total: int,
    ) -> None:
        pending = {tp for tp, end in targets.items() if self.positions[tp] < end}
        idle_polls = 0
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=self._batch_size)
            idle_polls = 0 if batch else idle_polls + 1
            if idle_polls > 30:
                raise RebuildError(f"no records for 30s while replaying {sorted(pending)}")
            envelopes: list[Envelope] = []
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= targets[tp]:
                        break
                    try:
                        event = parse_event(record.value)
                    except EventDecodeError:
                        self.skipped += 1  # already a dead letter of the live projection
                        continue
                    if event.topic_family == self.projection.name:
                        envelopes.append(Envelope(tp.topic, tp.partition, record.offset,
                                                  record.key, event, record.value))
                    self.positions[tp] = record.offset + 1
                if self.positions[tp] >= targets[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
                    # getmany moved past records we left unread; the swap's catch-up needs them
                    consumer.seek(tp, self.positions[tp])
            if envelopes:
                await self.projection.prepare(conn, envelopes)
                async with conn.transaction():
                    result = await self.projection.apply(conn, envelopes)
                self.applied += result.applied
                self.skipped += len(result.failures)
            if progress is not None:
                progress(sum(self.positions.values()), total)

    async def _swap(self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer) -> None:
        old = f"replaced_{self.projection.name}"
        await conn.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               lock_key(self.projection.name))
            live = await conn.fetch(
                "SELECT partition, next_offset FROM projection_checkpoints "
                "WHERE projection = $1 AND topic = $2", self.projection.name, self.topic)
            targets = {TopicPartition(self.topic, r["partition"]): r["next_offset"] for r in live}
            behind = {tp: end for tp, end in targets.items() if self.positions.get(tp, 0) < end}
            for tp in behind:
                consumer.resume(tp)
            await self._replay_until(conn, consumer, behind, None, 0)
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
            # The live worker may be behind the rebuild: move its checkpoints up; its next
            # fenced update then fails, and it re-reads them (nothing is applied twice).
            for tp, position in self.positions.items():
                await conn.execute(
                    "INSERT INTO projection_checkpoints (projection, topic, partition, next_offset)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) DO UPDATE"
                    " SET next_offset = greatest(projection_checkpoints.next_offset, $4),"
                    " updated_at = now()", self.projection.name, tp.topic, tp.partition, position)
            for payload in encode(Invalidation(flush_all=True)):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


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
