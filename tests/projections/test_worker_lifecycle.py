"""`ledger project` as an operator runs it: brokers late, servers away, SIGTERM always heard."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import ConsumerStoppedError

from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from ops.devstack import EmbeddedBroker
from ops.devstack.ports import free_port
from projections import ProjectionRunner, make_projection
from tests.polling import wait_until
from tests.projections.helpers import (
    emit,
    fetchval,
    ground_truth,
    random_usage,
    start_worker_process,
    summaries,
    wait_for_rows,
)

COUNT = "SELECT count(*) FROM usage_records"
SIGTERM_BOUND_S = 20.0  # what the README promises


def _a_batch_waits_on_the_lock(dsn: str) -> Callable[[], Awaitable[bool]]:
    async def waiting() -> bool:
        return bool(await fetchval(
            dsn, "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"))

    return waiting


def _stop_and_time(worker: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=SIGTERM_BOUND_S + 10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        raise AssertionError("the worker ignored SIGTERM") from None
    return code, time.monotonic() - started


async def test_project_waits_for_brokers_that_are_not_up_yet_and_keeps_quiet(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    configured = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    assert configured.database_url
    log = tmp_path / "worker.log"
    worker = start_worker_process(configured, log)
    broker = EmbeddedBroker(tmp_path / "broker", port)
    try:
        await asyncio.sleep(8)
        assert worker.poll() is None, log.read_text()[-2000:]  # still waiting, not exited
        noise = [line for line in log.read_text().splitlines()
                 if "aiokafka" in line and (" ERROR " in line or " WARNING " in line)]
        assert len(noise) <= 4, "\n".join(noise[:20])  # rate-limited, not one per attempt
        await asyncio.to_thread(broker.start)
        await ensure_topics(broker.bootstrap_servers, topic_specs(configured))
        events = random_usage(random.Random(5), [uuid.uuid4()], 300)
        await emit(configured, events)
        await wait_for_rows(configured.database_url, COUNT, 300, timeout=60)
        code, _ = await asyncio.to_thread(_stop_and_time, worker)
        assert code == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        broker.stop()
    assert await summaries(configured.database_url) == ground_truth(events)


@pytest.mark.parametrize("broker_gone_too", [False, True])
async def test_sigterm_ends_a_worker_whose_batch_cannot_commit(
    settings: Settings, tmp_path: Path, broker_gone_too: bool
) -> None:
    """A batch in hand that PostgreSQL does not answer (a lock stands in for a server that
    stopped answering) -- and, in the second case, no broker either."""
    broker = EmbeddedBroker(tmp_path / "broker", free_port())
    broker.start()
    configured = settings.model_copy(
        update={"kafka_bootstrap_servers": broker.bootstrap_servers})
    assert configured.database_url
    await ensure_topics(broker.bootstrap_servers, topic_specs(configured))
    events = random_usage(random.Random(8), [uuid.uuid4() for _ in range(4)], 400)
    log = tmp_path / "worker.log"
    worker = start_worker_process(configured, log)
    blocker = await asyncpg.connect(configured.database_url)
    try:
        await emit(configured, events[:200])
        await wait_for_rows(configured.database_url, COUNT, 200, timeout=60)
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE monthly_usage_summaries IN ACCESS EXCLUSIVE MODE")
        await emit(configured, events[200:])
        await wait_until(_a_batch_waits_on_the_lock(configured.database_url), 30,
                         "the worker's batch to wait on the lock")  # a batch it cannot commit
        if broker_gone_too:
            await asyncio.to_thread(broker.stop)
        code, took = await asyncio.to_thread(_stop_and_time, worker)
        assert code == 0, log.read_text()[-3000:]
        assert took <= SIGTERM_BOUND_S, f"SIGTERM took {took:.1f}s"
        await locked.rollback()
        assert "abandoning it" in log.read_text()
        if not broker_gone_too:  # the abandoned batch is simply redone by the next worker
            worker = start_worker_process(configured, log)
            await wait_for_rows(configured.database_url, COUNT, 400, timeout=60)
            assert await asyncio.to_thread(_stop_and_time, worker) is not None
            assert await summaries(configured.database_url) == ground_truth(events)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await blocker.close()
        broker.stop()


async def test_stop_while_the_consumer_is_starting_stops_that_consumer(
    settings: Settings,
) -> None:
    """Stop set while ``consumer.start()`` waits (a broker that accepts but does not answer
    holds it there; a slow group join does the same): the consumer must still be stopped,
    or its client, connections and tasks are left behind ("Unclosed AIOKafkaConsumer")."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the requests, never answers; returns when closed
        writer.close()

    broker = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = broker.sockets[0].getsockname()[1]
    assert settings.database_url
    runner = ProjectionRunner(make_projection("usage"), settings, dsn=settings.database_url,
                              bootstrap_servers=f"127.0.0.1:{port}")
    stop = asyncio.Event()
    try:
        running = asyncio.create_task(runner.run(stop))
        await wait_until(_consumer_created(runner), 30, "the runner to create its consumer")
        await asyncio.sleep(0.5)  # well inside start(): the silent broker holds it 40 s
        stop.set()
        await asyncio.wait_for(running, 15)
    finally:
        broker.close()
    consumer = runner._consumer
    assert consumer is not None
    with pytest.raises(ConsumerStoppedError):  # what a stopped consumer answers
        await consumer.getmany(timeout_ms=0)


def _consumer_created(runner: ProjectionRunner) -> Callable[[], Awaitable[bool]]:
    async def created() -> bool:
        return runner._consumer is not None
    return created
