"""ProjectionRunner: one consumer-group member applying one projection, exactly once in effect.

Two stages overlap so Python decodes the next batch while PostgreSQL applies this one: a
fetch stage (poll Kafka, decode, detect broker resets) and a commit stage. The commit path:
1. Merge the decoded batches waiting in the queue (up to ``max_records``); undecodable
   messages (bad JSON, schema violation, unknown type or version) are already dead letters.
2. Outside the transaction, let the projection prepare (e.g. create monthly partitions).
3. In ONE PostgreSQL transaction: advance each partition's checkpoint, fenced on the offset
   this worker holds; apply the events; record the dead letters; NOTIFY what changed.
4. Commit. Zero rows from a fenced update means another worker owns the partition: roll back,
   re-read the checkpoints, seek. A database outage is retried with back-off, same batch.
5. Only then commit the offsets to Kafka, so standard lag tools see progress.
Every seek bumps a generation number, and batches decoded before it are dropped unapplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from ledger.db import connect_options
from ledger.invalidation import CHANNEL, encode
from ledger.settings import Settings
from projections.base import Envelope, Projection, lock_key
from projections.checkpoints import CheckpointRecorder
from projections.deadletters import DeadLetterRecorder, RawMessage
from projections.decoding import DecodedBatch, decode_batch
from projections.exceptions import PartitionLostError, RebalanceFailedError
from projections.metrics import ProjectorMetrics

log = logging.getLogger("ledger.projector")
_LEAVE_TIMEOUT_S = 15.0

# Errors that mean "the database is away", not "this event is poison".
DB_OUTAGE = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncio.TimeoutError,
)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ProjectionRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._runner.forget(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # aiokafka swallows exceptions raised here, so remember them and stop the worker.
        try:
            await self._runner.take(list(assigned))
        except Exception as exc:
            log.exception("%s: partition assignment failed", self._runner.projection.name)
            self._runner.fatal = RebalanceFailedError(f"partition assignment failed: {exc}")


class ProjectionRunner:
    def __init__(
        self, projection: Projection, settings: Settings, *, dsn: str, bootstrap_servers: str,
        metrics: ProjectorMetrics | None = None, max_records: int = 5000,
        poll_timeout_ms: int = 250, client_id: str | None = None,
    ) -> None:
        self.projection = projection
        self.settings = settings
        self.topic = projection.topic(settings)
        self.group_id = f"{settings.consumer_group}.{projection.name}"
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self.metrics = metrics or ProjectorMetrics()
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._checkpoints = CheckpointRecorder(projection.name)
        self._dead_letters = DeadLetterRecorder(projection.name)
        self.positions: dict[TopicPartition, int] = {}  # checkpoint held per partition
        self._fetched: dict[TopicPartition, int] = {}  # next offset to decode per partition
        self._generation = 0  # bumped by every seek; older decoded batches are dropped
        self._ready: asyncio.Queue[DecodedBatch] = asyncio.Queue(maxsize=2)
        self.fatal: BaseException | None = None
        self.applied = 0
        self._db_lock = asyncio.Lock()  # one user of the connection at a time
        self._conn: asyncpg.Connection | None = None
        self._consumer: AIOKafkaConsumer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and committed."""
        if not await _unless_stopped(self._connect(), stop):
            return  # stopped while the database was still unreachable: nothing to finish
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self.group_id,
            client_id=self._client_id or f"ledger-{self.projection.name}",
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        await consumer.start()
        fetching = asyncio.create_task(self._fetch_stage(stop), name="fetch")
        try:
            await self._commit_stage(stop, fetching)
        finally:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
            await self._leave(consumer)
            if self._conn is not None:
                await self._conn.close()

    async def _fetch_stage(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        family = self.projection.name
        while not stop.is_set():
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
            except OffsetOutOfRangeError as exc:
                await self._restart_partitions(_out_of_range(exc), "offset out of range")
                continue
            if batch:
                decoded = decode_batch(family, self._generation, self._fetched, batch)
                if decoded.ranges:
                    await self._ready.put(decoded)
            await self._detect_reset()
            self._report_lag()

    async def _commit_stage(self, stop: asyncio.Event, fetching: asyncio.Task[None]) -> None:
        while True:
            if self.fatal is not None:
                raise self.fatal
            if fetching.done():
                fetching.result()  # re-raise a fetch-stage failure
                if self._ready.empty():
                    return  # stopped: what was fetched is applied
            try:
                batch = await asyncio.wait_for(self._ready.get(), timeout=0.2)
            except TimeoutError:
                continue
            while not self._ready.empty() and batch.records < self._max_records:
                later = self._ready.get_nowait()
                if later.generation != batch.generation or not batch.absorb(later):
                    await self._process(batch)
                    batch = later
            await self._process(batch)

    async def _leave(self, consumer: AIOKafkaConsumer) -> None:
        """Leave the group (revocation waits for the DB lock), but never hang the exit.

        A group stuck mid-rebalance (a dead member the broker has not expired yet) can keep
        ``stop()`` waiting; the checkpoints are in PostgreSQL, so giving up loses nothing.
        """
        try:
            await asyncio.wait_for(consumer.stop(), timeout=_LEAVE_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s: leaving consumer group %s timed out after %.0fs; exiting anyway "
                        "(progress is in projection_checkpoints)", self.projection.name,
                        self.group_id, _LEAVE_TIMEOUT_S)

    async def _connect(self) -> asyncpg.Connection:
        delay = 0.1
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn, **connect_options(self.settings))
                return self._conn
            except DB_OUTAGE as exc:
                self.metrics.db_retries.labels(self.projection.name).inc()
                log.warning("%s: database unavailable (%s); retrying in %.1fs",
                            self.projection.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _db(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            return await self._connect()
        return self._conn

    # -- rebalance ---------------------------------------------------------------------------
    async def forget(self, revoked: list[TopicPartition]) -> None:
        async with self._db_lock:  # waits for the batch in flight to commit or roll back
            for tp in revoked:
                self.positions.pop(tp, None)
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(self.projection.name, tp.topic, str(tp.partition))
            self._rewind()

    async def take(self, assigned: list[TopicPartition]) -> None:
        """Seek each newly assigned partition to the checkpoint stored in PostgreSQL."""
        if not assigned:
            return
        assert self._consumer is not None
        starts = await self._consumer.beginning_offsets(assigned)
        async with self._db_lock:
            conn = await self._db()
            stored = await self._checkpoints.load(
                conn, self.topic, {tp.partition: starts[tp] for tp in assigned})
            for tp in assigned:
                self.positions[tp] = stored[tp.partition]
            self._rewind()
        log.info("%s: assigned %s", self.projection.name,
                 ", ".join(f"{tp.partition}@{self.positions[tp]}" for tp in assigned))

    def _rewind(self) -> None:
        """Drop every decoded-but-unapplied batch; fetch again from the held checkpoints.

        Called with the DB lock held, so no batch is half-way through its transaction.
        """
        assert self._consumer is not None
        self._generation += 1
        self._fetched = dict(self.positions)
        assigned = self._consumer.assignment()
        for tp, position in self.positions.items():
            if tp in assigned:
                self._consumer.seek(tp, position)

    async def _resync(self) -> None:
        """After a lost fence: re-read every held checkpoint and seek to it."""
        assert self._consumer is not None
        held = [tp for tp in self.positions if tp in self._consumer.assignment()]
        self.positions = {tp: pos for tp, pos in self.positions.items() if tp in held}
        if held:
            await self.take(held)

    # -- the commit path -----------------------------------------------------------------------
    async def _process(self, batch: DecodedBatch) -> None:
        if batch.generation != self._generation:
            return  # decoded before a seek: the partitions will be fetched again
        started = time.perf_counter()
        ranges, envelopes, poison = batch.ranges, batch.envelopes, batch.poison
        while True:
            try:
                async with self._db_lock:
                    conn = await self._db()
                    await self.projection.prepare(conn, envelopes)
                    applied = await self._commit(conn, ranges, envelopes, poison)
                break
            except PartitionLostError as exc:
                log.warning("%s", exc)
                self.metrics.partitions_lost.labels(self.projection.name).inc()
                await self._resync()
                return
            except DB_OUTAGE as exc:
                self.metrics.db_retries.labels(self.projection.name).inc()
                log.warning("%s: database error, retrying the batch: %s", self.projection.name, exc)
                if self._conn is not None and not self._conn.is_closed():
                    self._conn.terminate()
                self._conn = None
                await asyncio.sleep(0.5)
                if batch.generation != self._generation:
                    return  # a rebalance happened meanwhile; the owner replays the partitions
        for tp, (_, next_offset) in ranges.items():
            self.positions[tp] = next_offset
        self.applied += applied
        await self._commit_kafka(ranges)
        name = self.projection.name
        self.metrics.events_applied.labels(name).inc(applied)
        self.metrics.batch_size.labels(name).observe(batch.records)
        self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started)

    async def _commit(
        self, conn: asyncpg.Connection, ranges: dict[TopicPartition, tuple[int, int]],
        envelopes: list[Envelope], poison: list[tuple[RawMessage, str, str]],
    ) -> int:
        async with conn.transaction():
            # Shared: batches never wait for each other, only for a rebuild's table swap.
            await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                               lock_key(self.projection.name))
            for tp, (expected, next_offset) in ranges.items():
                if self.positions.get(tp) != expected:
                    raise PartitionLostError(f"{self.projection.name}: {tp} was revoked")
                await self._checkpoints.advance(conn, tp.topic, tp.partition, expected, next_offset)
            result = await self.projection.apply(conn, envelopes)
            for failure in result.failures:
                e = failure.envelope
                poison.append((RawMessage(e.topic, e.partition, e.offset, e.key, e.value, ()),
                               failure.kind, failure.error))
            await self._dead_letters.record(conn, poison)
            if not result.invalidation.is_empty():
                for payload in encode(result.invalidation):
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        for _, kind, _ in poison:
            self.metrics.dead_letters.labels(self.projection.name, kind).inc()
        return result.applied

    async def _commit_kafka(self, ranges: dict[TopicPartition, tuple[int, int]]) -> None:
        assert self._consumer is not None
        offsets = {tp: OffsetAndMetadata(nxt, "") for tp, (_, nxt) in ranges.items()
                   if tp in self._consumer.assignment()}
        try:
            if offsets:
                await self._consumer.commit(offsets)
        except KafkaError as exc:  # informational only: PostgreSQL holds the truth
            log.info("%s: Kafka offset commit skipped: %s", self.projection.name, exc)

    # -- broker reset ------------------------------------------------------------------------
    async def _detect_reset(self) -> None:
        """A checkpoint beyond the fetch high watermark means the broker lost its log."""
        assert self._consumer is not None
        beyond = []
        for tp, position in self.positions.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and position > highwater:
                beyond.append(tp)
        if beyond:
            await self._restart_partitions(beyond, "checkpoint beyond the log end")

    async def _restart_partitions(self, partitions: list[TopicPartition], why: str) -> None:
        assert self._consumer is not None
        held = [tp for tp in partitions if tp in self.positions]
        if not held:
            return
        starts = await self._consumer.beginning_offsets(held)
        async with self._db_lock:
            conn = await self._db()
            for tp in held:
                expected = self.positions[tp]
                log.warning("%s: %s[%d] %s (checkpoint %d, high watermark %s); broker was reset, "
                            "restarting from offset %d — event_id dedup keeps totals right",
                            self.projection.name, tp.topic, tp.partition, why, expected,
                            self._consumer.highwater(tp), starts[tp])
                moved = await self._checkpoints.reset(
                    conn, tp.topic, tp.partition, expected, starts[tp])
                if moved:
                    self.positions[tp] = starts[tp]
            self._rewind()

    def _report_lag(self) -> None:
        assert self._consumer is not None
        for tp, position in self.positions.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag.labels(self.projection.name, tp.topic, str(tp.partition)).set(
                    max(highwater - position, 0))


async def _unless_stopped(work: Coroutine[Any, Any, object], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first (then cancel it); True if it completed."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def _out_of_range(exc: OffsetOutOfRangeError) -> list[TopicPartition]:
    found = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return list(found)

