"""Exactly-once effect under crashes, rebalances, a broker reset and a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from ledger.events import UsageRecorded
from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from ops.devstack import EmbeddedBroker
from ops.devstack.ports import free_port
from projections import ProjectionRunner, make_projection
from projections.reconcile import compare
from tests.polling import wait_until
from tests.projections.helpers import (
    emit,
    ground_truth,
    random_usage,
    running_worker,
    start_worker_process,
    summaries,
    wait_for_rows,
)
from tests.servers import Servers

COUNT = "SELECT count(*) FROM usage_records"


async def test_kill_minus_nine_of_two_workers_never_double_counts(
    settings: Settings, tmp_path: Path
) -> None:
    """Two worker processes, killed -9 alternately while they own partitions.

    Each victim is killed only once it owns partitions (its log says so), at a random moment
    of its batches; by then the other side's restarted process is joining, so every kill
    lands in a rebalance triggered by the previous one, and partitions move between the
    survivor, the newcomer and dead members the broker has not expired yet. The fenced
    checkpoints must keep every event counted once.
    """
    rng = random.Random(11)
    keys = [uuid.uuid4() for _ in range(20)]
    events = random_usage(rng, keys, 20_000)
    resent = rng.sample(events, 300)
    dsn = settings.database_url
    assert dsn
    logs = [[tmp_path / "worker-a-0.log"], [tmp_path / "worker-b-0.log"]]
    sender = asyncio.create_task(_emit_slowly(settings, events + resent, chunks=40, pause=1.0))
    workers = [start_worker_process(settings, log[0]) for log in logs]
    try:
        for kill in range(4):
            side = kill % 2
            await wait_until(_owns_partitions(logs[side][-1]), 120,
                             f"{logs[side][-1].name} to own partitions")
            await asyncio.sleep(rng.uniform(0.0, 3.0))  # mid-batch, or between batches
            workers[side].send_signal(signal.SIGKILL)
            await asyncio.to_thread(workers[side].wait)
            logs[side].append(tmp_path / f"worker-{'ab'[side]}-{len(logs[side])}.log")
            workers[side] = start_worker_process(settings, logs[side][-1])
        await sender
        await wait_for_rows(dsn, COUNT, 20_000, timeout=180)
        await wait_for_rows(dsn, "SELECT sum(next_offset) FROM projection_checkpoints",
                            len(events) + len(resent), timeout=60)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert await asyncio.to_thread(worker.wait, 60) == 0  # clean exit on SIGTERM
    finally:
        sender.cancel()  # a no-op when it finished; stops it when the test failed early
        await asyncio.gather(sender, return_exceptions=True)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert await summaries(dsn) == ground_truth(events)
    conn = await asyncpg.connect(dsn)
    try:
        assert await compare(conn) == []  # every summary column agrees with the records
    finally:
        await conn.close()


def _owns_partitions(log: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return b"usage: assigned" in await asyncio.to_thread(log.read_bytes)
    return check


async def _emit_slowly(
    settings: Settings, events: list[UsageRecorded], chunks: int, pause: float
) -> None:
    size = len(events) // chunks + 1
    for start in range(0, len(events), size):
        await emit(settings, events[start:start + size])
        await asyncio.sleep(pause)


async def test_two_workers_with_a_rebalance_in_the_middle(settings: Settings) -> None:
    rng = random.Random(5)
    keys = [uuid.uuid4() for _ in range(30)]
    events = random_usage(rng, keys, 12_000)
    assert settings.database_url and settings.kafka_bootstrap_servers
    first = ProjectionRunner(make_projection("usage"), settings, dsn=settings.database_url,
                             bootstrap_servers=settings.kafka_bootstrap_servers, max_records=500)
    second = ProjectionRunner(make_projection("usage"), settings, dsn=settings.database_url,
                              bootstrap_servers=settings.kafka_bootstrap_servers, max_records=500)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    task_first = asyncio.create_task(first.run(stop_first))
    await emit(settings, events[:4000])
    await wait_for_rows(settings.database_url, COUNT, 4000, timeout=60)
    task_second = asyncio.create_task(second.run(stop_second))  # joins: rebalance
    await emit(settings, events[4000:8000])
    await asyncio.sleep(3)
    stop_first.set()  # leaves: the second takes every partition
    await task_first
    await emit(settings, events[8000:])
    await wait_for_rows(settings.database_url, COUNT, 12_000, timeout=60)
    stop_second.set()
    await task_second
    assert await summaries(settings.database_url) == ground_truth(events)
    assert second.applied > 0


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start()
    yield broker
    broker.stop()


async def test_broker_reset_restarts_partitions_from_the_log_start(
    settings: Settings, private_broker: EmbeddedBroker
) -> None:
    configured = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker.bootstrap_servers})
    await ensure_topics(private_broker.bootstrap_servers, topic_specs(configured))
    rng = random.Random(3)
    keys = [uuid.uuid4() for _ in range(8)]
    before = random_usage(rng, keys, 3000)
    await emit(configured, before)
    assert configured.database_url
    async with running_worker(configured, ("usage",)):
        await wait_for_rows(configured.database_url, COUNT, 3000)
    private_broker.stop()  # memory storage: every topic is gone
    private_broker.start()
    await ensure_topics(private_broker.bootstrap_servers, topic_specs(configured))
    after = random_usage(rng, keys, 500)
    replayed = before[:200]  # a producer's spool re-sends some old events after the reset
    await emit(configured, replayed + after)
    async with running_worker(configured, ("usage",)):
        await wait_for_rows(configured.database_url, COUNT, 3500)
        await wait_for_rows(configured.database_url,
                            "SELECT sum(next_offset) FROM projection_checkpoints", 700)
    assert await summaries(configured.database_url) == ground_truth(before + after)


@pytest.mark.parametrize("worker_runs_through_the_reset", [False, True])
async def test_a_reset_log_that_grew_past_the_checkpoints_loses_nothing(
    settings: Settings, private_broker: EmbeddedBroker, worker_runs_through_the_reset: bool
) -> None:
    """The chaos run's 9.9%: checkpoints at 3,000, then 5,000 new events after a reset.

    The new log is longer than the old checkpoints, so "checkpoint beyond the log end" never
    fires; only the log's identity tells that offsets 0..checkpoint are new events.
    """
    configured = settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker.bootstrap_servers})
    await ensure_topics(private_broker.bootstrap_servers, topic_specs(configured))
    rng = random.Random(99)
    keys = [uuid.uuid4() for _ in range(16)]
    before, after = random_usage(rng, keys, 3000), random_usage(rng, keys, 5000)
    await emit(configured, before)
    assert configured.database_url
    async with running_worker(configured, ("usage",)):
        await wait_for_rows(configured.database_url, COUNT, 3000)
        if worker_runs_through_the_reset:
            private_broker.stop()
            private_broker.start()
            await ensure_topics(private_broker.bootstrap_servers, topic_specs(configured))
            await emit(configured, after)
            await wait_for_rows(configured.database_url, COUNT, 8000, timeout=90)
    if not worker_runs_through_the_reset:
        private_broker.stop()
        private_broker.start()
        await ensure_topics(private_broker.bootstrap_servers, topic_specs(configured))
        await emit(configured, after)
        async with running_worker(configured, ("usage",)):
            await wait_for_rows(configured.database_url, COUNT, 8000, timeout=90)
    assert await summaries(configured.database_url) == ground_truth(before + after)


async def test_postgres_restart_while_the_worker_runs(
    settings: Settings, servers: Servers
) -> None:
    if servers.postgres is None:
        pytest.skip("needs the embedded PostgreSQL, which the test can restart")
    rng = random.Random(9)
    keys = [uuid.uuid4() for _ in range(10)]
    events = random_usage(rng, keys, 6000)
    assert settings.database_url
    async with running_worker(settings, ("usage",)) as worker:
        await emit(settings, events[:2000])
        await wait_for_rows(settings.database_url, COUNT, 2000)
        await asyncio.to_thread(servers.postgres.stop, "immediate")  # a crash, not a shutdown
        await emit(settings, events[2000:])
        await asyncio.sleep(2)
        await asyncio.to_thread(servers.postgres.start)
        await wait_for_rows(settings.database_url, COUNT, 6000, timeout=60)
        retries = sum(r.metrics.db_retries.labels("usage")._value.get() for r in worker.runners)
    assert retries >= 1
    assert await summaries(settings.database_url) == ground_truth(events)
