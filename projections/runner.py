"""ProjectionRunner: one consumer-group member applying one projection, exactly once in effect.

Two stages overlap so Python decodes the next batch while PostgreSQL applies this one: a
fetch stage (poll Kafka, decode, watch for a replaced log) and a commit stage. The commit
path, marked ``# Step N.`` where each happens:
1. Decode (fetch stage): undecodable messages (bad JSON, schema violation, unknown type or
   version, wrong topic, unreadable batch) become dead letters of their batch.
2. Merge the decoded batches waiting in the queue, up to ``max_records``.
3. Outside the transaction, let the projection prepare (e.g. create monthly partitions).
4. In ONE PostgreSQL transaction: advance each partition's checkpoint, fenced on the offset
   this worker holds (and remember the log's anchor on its first batch); apply the events --
   if the set-based apply fails for any reason but an outage, apply them one by one and
   dead-letter the failing ones; record the dead letters; NOTIFY what changed.
5. Commit. Zero rows from a fenced update means another worker owns the partition: roll back,
   re-read the checkpoints, seek. A database outage is retried with back-off, same batch.
6. Only then commit the offsets to Kafka, so standard lag tools see progress.
Every seek bumps a generation number, and batches decoded before it are dropped unapplied.

A log that is not the one the checkpoints came from (broker reset, topic recreated) is found
by its anchor record (projections.logidentity) on every assignment and every few seconds,
and the partition is replayed from the new log's start; event_id dedup keeps totals right.
On stop, the batch in hand gets ``STOP_GRACE_S`` to commit; a batch that cannot (database
or broker away) is abandoned uncommitted and simply redone by the partition's next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from ledger.db import connect_options
from ledger.settings import Settings
from projections.base import Envelope, Failure, Projection, apply_resiliently, lock_key
from projections.decoding import DecodedBatch, decode_batch
from projections.exceptions import PartitionLostError, RebalanceFailedError
from projections.lifecycle import (
    finish_within_grace,
    log_starts,
    out_of_range,
    unless_stopped,
    unless_stopped_value,
)
from projections.logidentity import Anchor, LogProbe, Verdict
from projections.metrics import ProjectorMetrics
from projections.outage import is_outage
from projections.storage import CheckpointRecorder, DeadLetterRecorder, notify

log = logging.getLogger("ledger.projector")
_LEAVE_TIMEOUT_S = 5.0
_KAFKA_COMMIT_TIMEOUT_S = 5.0
_LOG_CHECK_INTERVAL_S = 5.0


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
        self.anchors: dict[TopicPartition, Anchor | None] = {}  # each held log's identity
        self._fetched: dict[TopicPartition, int] = {}  # next offset to decode per partition
        self._generation = 0  # bumped by every seek; older decoded batches are dropped
        self._ready: asyncio.Queue[DecodedBatch] = asyncio.Queue(maxsize=2)
        self.fatal: BaseException | None = None
        self.applied = 0
        self._db_lock = asyncio.Lock()  # one user of the connection at a time
        self._conn: asyncpg.Connection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._probe = LogProbe(bootstrap_servers)
        self._stop = asyncio.Event()
        self._next_log_check = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand gets STOP_GRACE_S to commit."""
        self._stop = stop
        if not await unless_stopped(self._connect(), stop):
            return  # stopped while the database was still unreachable: nothing to finish
        consumer = await unless_stopped_value(self._start_consumer(), stop)
        if consumer is None:
            await self._close_db()
            return  # stopped while the brokers were still unreachable
        fetching = asyncio.create_task(self._fetch_stage(stop), name="fetch")
        committing = asyncio.create_task(self._commit_stage(fetching), name="commit")
        try:
            await finish_within_grace(committing, stop, self.projection.name)
        finally:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
            await self._leave(consumer)
            await self._probe.close()
            await self._close_db()

    async def _start_consumer(self) -> AIOKafkaConsumer:
        """Join the group, waiting (with back-off) for brokers that are not up yet."""
        delay = 0.5
        session_timeout = self.settings.consumer_session_timeout
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, group_id=self.group_id,
                client_id=self._client_id or f"ledger-{self.projection.name}",
                enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=int(session_timeout.total_seconds() * 1000),
                heartbeat_interval_ms=1_000,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            self._consumer = consumer
            consumer.subscribe([self.topic], listener=_Rebalance(self))
            try:
                await consumer.start()
                return consumer
            except KafkaError as exc:
                self.metrics.broker_retries.labels(self.projection.name).inc()
                log.warning("%s: Kafka brokers %s unavailable (%s); retrying in %.1fs",
                            self.projection.name, self._bootstrap, exc, delay)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), timeout=_LEAVE_TIMEOUT_S)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except BaseException:
                # Cancelled: stop was set while start() waited (a group join, a broker that
                # does not answer). Unstopped, it leaves its client, connections and tasks.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), timeout=_LEAVE_TIMEOUT_S)
                raise

    async def _fetch_stage(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        family = self.projection.name
        while not stop.is_set():
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records)
            except OffsetOutOfRangeError as exc:
                await self._restart_partitions(out_of_range(exc), "offset out of range")
                continue
            except KafkaError as exc:  # brokers away: aiokafka reconnects, we poll again
                log.warning("%s: fetch failed: %s", self.projection.name, exc)
                await asyncio.sleep(1.0)
                continue
            if batch:
                # Step 1. Decode; poison becomes dead letters of this batch.
                decoded = decode_batch(family, self._generation, self._fetched, batch)
                if decoded.ranges:
                    await self._ready.put(decoded)
            await self._detect_reset()
            await self._check_logs()
            self._report_lag()

    async def _commit_stage(self, fetching: asyncio.Task[None]) -> None:
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
            # Step 2. Merge the batches already decoded, up to max_records.
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
        except (KafkaError, asyncio.CancelledError) as exc:
            # With the brokers away, aiokafka's stop() can raise its fetcher's cancellation.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled ourselves
            log.warning("%s: leaving consumer group %s failed (%s); exiting anyway",
                        self.projection.name, self.group_id, type(exc).__name__)

    async def _connect(self) -> asyncpg.Connection:
        delay = 0.1
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn, **connect_options(self.settings))
                return self._conn
            except Exception as exc:
                if not is_outage(exc):
                    raise  # a wrong setting or credential: waiting cannot fix it
                self.metrics.db_retries.labels(self.projection.name).inc()
                log.warning("%s: database unavailable (%s); retrying in %.1fs",
                            self.projection.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _db(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            return await self._connect()
        return self._conn

    async def _close_db(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except Exception:  # a server that is away cannot say goodbye
                conn.terminate()

    # -- rebalance ---------------------------------------------------------------------------
    async def forget(self, revoked: list[TopicPartition]) -> None:
        async with self._db_lock:  # waits for the batch in flight to commit or roll back
            for tp in revoked:
                self.positions.pop(tp, None)
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(self.projection.name, tp.topic, str(tp.partition))
            self._rewind()

    async def take(self, assigned: list[TopicPartition]) -> None:
        """Seek each newly assigned partition to its checkpoint, after checking its log."""
        if not assigned:
            return
        assert self._consumer is not None
        starts = await log_starts(self._consumer, assigned)
        async with self._db_lock:
            conn = await self._db()
            stored = await self._checkpoints.load(
                conn, self.topic, {tp.partition: starts[tp] for tp in assigned})
            for tp in assigned:
                self.positions[tp] = stored[tp.partition].next_offset
                self.anchors[tp] = stored[tp.partition].anchor
            self._rewind()
        log.info("%s: assigned %s", self.projection.name,
                 ", ".join(f"{tp.partition}@{self.positions[tp]}" for tp in assigned))
        self._next_log_check = 0.0  # check the new partitions' logs on the next poll

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
                    # Step 3. Outside the transaction: DDL the batch needs.
                    await self.projection.prepare(conn, envelopes)
                    applied = await self._commit(conn, batch, envelopes, poison)
                break
            except PartitionLostError as exc:
                # Step 5 (fence lost). Rolled back: re-read the checkpoints and seek.
                log.warning("%s", exc)
                self.metrics.partitions_lost.labels(self.projection.name).inc()
                await self._resync()
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # Step 5 (outage). Nothing was committed: retry the same batch.
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
            if self.anchors.get(tp) is None and tp in batch.anchors:
                self.anchors[tp] = batch.anchors[tp]
        self.applied += applied
        # Step 6. Kafka offsets, informational: PostgreSQL already holds the truth.
        await self._commit_kafka(ranges)
        name = self.projection.name
        self.metrics.events_applied.labels(name).inc(applied)
        self.metrics.batch_size.labels(name).observe(batch.records)
        self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started)

    async def _commit(
        self, conn: asyncpg.Connection, batch: DecodedBatch,
        envelopes: list[Envelope], poison: list[Failure],
    ) -> int:
        # Step 4. One transaction: checkpoints (fenced), rows, dead letters, NOTIFY.
        async with conn.transaction():
            # Shared: batches never wait for each other, only for a rebuild's table swap.
            await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                               lock_key(self.projection.name))
            for tp, (expected, next_offset) in batch.ranges.items():
                if self.positions.get(tp) != expected:
                    raise PartitionLostError(f"{self.projection.name}: {tp} was revoked")
                anchor = batch.anchors.get(tp) if self.anchors.get(tp) is None else None
                await self._checkpoints.advance(
                    conn, tp.topic, tp.partition, expected, next_offset, anchor)
            result = await apply_resiliently(self.projection, conn, envelopes)
            letters = [*poison, *result.failures]
            await self._dead_letters.record(conn, letters)
            await notify(conn, result.invalidation)
        # Step 5. Committed.
        for letter in letters:
            self.metrics.dead_letters.labels(self.projection.name, letter.kind).inc()
        if result.repriced:
            self.metrics.repriced.labels(self.projection.name).inc(result.repriced)
        return result.applied

    async def _commit_kafka(self, ranges: dict[TopicPartition, tuple[int, int]]) -> None:
        assert self._consumer is not None
        offsets = {tp: OffsetAndMetadata(nxt, "") for tp, (_, nxt) in ranges.items()
                   if tp in self._consumer.assignment()}
        try:
            if offsets:
                await asyncio.wait_for(self._consumer.commit(offsets),
                                       timeout=_KAFKA_COMMIT_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:  # informational: PostgreSQL holds the truth
            log.info("%s: Kafka offset commit skipped: %s", self.projection.name, exc)

    # -- broker reset ------------------------------------------------------------------------
    async def _detect_reset(self) -> None:
        """A checkpoint beyond the fetch high watermark, for a partition with no anchor yet.

        Once a partition has an anchor, only the anchor decides (``_check_logs``): the
        embedded broker can report a high watermark below records it has just served, and
        resetting on that replayed a partition from 0 once a second (a chaos run).
        """
        assert self._consumer is not None
        beyond = []
        for tp, position in self.positions.items():
            if self.anchors.get(tp) is not None:
                continue
            highwater = self._consumer.highwater(tp)
            if highwater is not None and position > highwater:
                beyond.append(tp)
        if beyond:
            await self._restart_partitions(beyond, "checkpoint beyond the log end")

    async def _check_logs(self) -> None:
        """Every few seconds: is each held partition's log still the one its anchor names?"""
        now = asyncio.get_running_loop().time()
        if now < self._next_log_check:
            return
        self._next_log_check = now + _LOG_CHECK_INTERVAL_S
        anchors = {tp: a for tp, a in self.anchors.items()
                   if a is not None and tp in self.positions}
        verdicts = await self._probe.check(anchors)
        replaced = [tp for tp, v in verdicts.items() if v is Verdict.DIFFERENT]
        if replaced:
            await self._restart_partitions(replaced, "holds another log than its checkpoint "
                                           "(the anchor record differs)")
        for tp, verdict in verdicts.items():
            if verdict is Verdict.GONE:
                log.warning("%s: %s[%d]: the anchor record at offset %d was deleted from the "
                            "log; re-anchoring (a later broker reset is detected again from "
                            "the new anchor)", self.projection.name, tp.topic, tp.partition,
                            anchors[tp].offset)
                async with self._db_lock:
                    await self._checkpoints.reanchor(
                        await self._db(), tp.topic, tp.partition, anchors[tp])
                    self.anchors[tp] = None

    async def _restart_partitions(self, partitions: list[TopicPartition], why: str) -> None:
        assert self._consumer is not None
        held = [tp for tp in partitions if tp in self.positions]
        if not held:
            return
        starts = await log_starts(self._consumer, held)
        async with self._db_lock:
            conn = await self._db()
            for tp in held:
                expected = self.positions.get(tp)
                if expected is None:
                    continue  # revoked meanwhile
                log.warning("%s: %s[%d] %s (checkpoint %d, high watermark %s); the broker's log "
                            "was replaced, replaying from offset %d — event_id dedup keeps "
                            "totals right", self.projection.name, tp.topic, tp.partition, why,
                            expected, self._consumer.highwater(tp), starts[tp])
                moved = await self._checkpoints.reset(
                    conn, tp.topic, tp.partition, expected, starts[tp])
                if moved:
                    self.positions[tp] = starts[tp]
                    self.anchors[tp] = None
                    self.metrics.log_resets.labels(self.projection.name).inc()
            self._rewind()

    def _report_lag(self) -> None:
        assert self._consumer is not None
        for tp, position in self.positions.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag.labels(self.projection.name, tp.topic, str(tp.partition)).set(
                    max(highwater - position, 0))
