"""Rebuilds against the log as it really is: records the replay skips, and logs that no longer
hold what the live tables were projected from.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder

from ledger.events import ApiKeyRevoked, dump_event
from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from projections import PROJECTION_NAMES, RebuildError, make_projection
from projections import rebuild as rebuild_module
from projections.logidentity import Verdict
from projections.rebuild import Rebuilder
from projections.rebuild_checks import EVENT_TABLES, PREFLIGHT_CHECKS, LogFacts, first_refusal
from projections.status import log_ends
from tests.projections.helpers import (
    emit,
    fetchval,
    random_usage,
    running_worker,
    summaries,
    wait_for_rows,
)

COUNT = "SELECT count(*) FROM usage_records"
CHECKPOINTS = "SELECT sum(next_offset) FROM projection_checkpoints"


async def _send_to_partition(bootstrap: str, topic: str, partition: int,
                             value: bytes | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k", partition=partition)
    finally:
        await producer.stop()


def _commit_marker_batch() -> bytes:
    """A transaction commit marker, as a transactional producer's coordinator writes it.

    The embedded broker has no transactions, but it stores a control batch sent to it, and
    consumers skip it exactly as they skip the markers Apache Kafka writes.
    """
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=1,
                                        producer_id=4242, producer_epoch=0, base_sequence=-1,
                                        batch_size=1 << 20)
    builder.append(0, timestamp=int(time.time() * 1000), key=struct.pack(">hh", 0, 1),
                   value=struct.pack(">hi", 0, 0), headers=[])
    batch = bytearray(builder.build())
    at = DefaultRecordBase.ATTRIBUTES_OFFSET
    attributes = struct.unpack_from(">h", batch, at)[0] | DefaultRecordBase.CONTROL_MASK
    struct.pack_into(">h", batch, at, attributes)
    struct.pack_into(">I", batch, DefaultRecordBase.CRC_OFFSET, crc32c(bytes(batch[at:])))
    return bytes(batch)


async def _append_commit_marker(bootstrap: str, topic: str, partition: int) -> None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        response = await client.send(leader, ProduceRequest(
            None, -1, 10_000, [(topic, [(partition, _commit_marker_batch())])]))
        [answer] = [p for t in response.to_object()["topics"] for p in t["partitions"]]
        assert answer["error_code"] == 0
    finally:
        await client.close()


@pytest.mark.parametrize("tail", ["undecodable", "tombstone", "commit marker"])
async def test_a_partition_ending_in_a_skipped_record_rebuilds(
    settings: Settings, tail: str
) -> None:
    """The replay used to wait for a record after the skipped one: "no records for 30s"."""
    rng = random.Random(17)
    events = random_usage(rng, [uuid.uuid4() for _ in range(5)], 400)
    await emit(settings, events)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.topic_usage
    if tail == "commit marker":
        await _append_commit_marker(bootstrap, topic, 0)
    else:
        await _send_to_partition(bootstrap, topic, 0,
                                 b'{"type": "usage.recorded", "oops"' if tail == "undecodable"
                                 else None)
    rebuilder = Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                          bootstrap_servers=bootstrap)
    assert await rebuilder.run() == 400
    assert rebuilder.skipped == (0 if tail == "commit marker" else 1)
    assert await fetchval(settings.database_url, COUNT) == 400
    ends = await log_ends(bootstrap, [topic])
    for tp, end in ends.items():  # the position moved past the skipped offset
        checkpoint = await fetchval(
            settings.database_url, "SELECT next_offset FROM projection_checkpoints "
            "WHERE projection = 'usage' AND topic = $1 AND partition = $2", topic, tp.partition)
        assert checkpoint == end, tp


async def test_a_wrong_topic_event_is_a_dead_letter_in_a_rebuild_as_in_the_live_worker(
    settings: Settings,
) -> None:
    """A valid keys event on the usage topic: the live worker dead-letters it (wrong_topic);
    the rebuild used to drop it silently, not even counting it as skipped."""
    rng = random.Random(23)
    events = random_usage(rng, [uuid.uuid4() for _ in range(3)], 50)
    await emit(settings, events)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.topic_usage
    stray = ApiKeyRevoked(event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), source="test",
                          api_key_id=uuid.uuid4(), reason="leaked")
    await _send_to_partition(bootstrap, topic, 0, dump_event(stray))
    rebuilder = Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                          bootstrap_servers=bootstrap)
    assert await rebuilder.run() == 50
    assert rebuilder.skipped == 1
    letters = await fetchval(
        settings.database_url, "SELECT array_agg(error_kind) FROM dead_letters "
        "WHERE projection = 'usage' AND topic = $1", topic)
    assert letters == ["wrong_topic"]


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


async def _recreate_usage_topic(settings: Settings) -> None:
    """The log loses everything, as when a broker loses its storage or a topic is recreated."""
    assert settings.kafka_bootstrap_servers
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic_usage])
    finally:
        await admin.close()
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(settings))


async def _live_state(dsn: str) -> tuple[object, ...]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await summaries(dsn),
            [tuple(r) for r in await conn.fetch(
                "SELECT event_id, occurred_at, cost_usd FROM usage_records ORDER BY 1")],
            [tuple(r) for r in await conn.fetch(
                "SELECT projection, topic, partition, next_offset FROM projection_checkpoints "
                "ORDER BY 1, 2, 3")],
            await conn.fetchval("SELECT count(*) FROM pg_namespace "
                                "WHERE nspname IN ('rebuild_usage', 'replaced_usage')"),
        )
    finally:
        await conn.close()


async def _until_the_worker_restarted_from_the_new_log(settings: Settings) -> None:
    """The worker moves its checkpoints back to 0 once it sees the empty log.

    Records are emitted only after that: a new log longer than the old checkpoints looks
    like the old log to the worker (telling them apart is the log-identity anchor's job).
    """
    assert settings.database_url
    await wait_for_rows(settings.database_url, CHECKPOINTS, 0)


def _one_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == ""  # refused before replaying: no progress bar either
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: rebuild of usage refused, live tables untouched: ")
    return line


async def test_rebuild_refuses_a_log_that_lost_what_the_live_tables_hold(
    settings: Settings,
) -> None:
    rng = random.Random(23)
    keys = [uuid.uuid4() for _ in range(12)]
    await emit(settings, random_usage(rng, keys, 1000))
    assert settings.database_url
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 1000)
    await _recreate_usage_topic(settings)

    # Before the live worker noticed: its checkpoints point past the new log's end.
    live = await _live_state(settings.database_url)
    line = _one_refusal(await asyncio.to_thread(_ledger, settings, "rebuild", "usage"))
    assert "ends at offset 0, before the live checkpoint" in line
    assert await _live_state(settings.database_url) == live

    # The live worker restarts from the new log's start: 1,300 events live, 300 in the log.
    async with running_worker(settings, ("usage",)):
        await _until_the_worker_restarted_from_the_new_log(settings)
        await emit(settings, random_usage(rng, keys, 300))
        await wait_for_rows(settings.database_url, COUNT, 1300)
        await wait_for_rows(settings.database_url, CHECKPOINTS, 300)
    live = await _live_state(settings.database_url)
    line = _one_refusal(await asyncio.to_thread(_ledger, settings, "rebuild", "usage"))
    assert "holds 300 records but the live usage tables hold 1300 events" in line
    assert await _live_state(settings.database_url) == live


async def test_rebuild_refuses_at_the_swap_when_it_built_fewer_events_than_live(
    settings: Settings,
) -> None:
    """Enough records in the log, but re-sent duplicates: only the replay can tell."""
    rng = random.Random(29)
    keys = [uuid.uuid4() for _ in range(12)]
    await emit(settings, random_usage(rng, keys, 1000))
    assert settings.database_url and settings.kafka_bootstrap_servers
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 1000)
    await _recreate_usage_topic(settings)
    after = random_usage(rng, keys, 400)
    async with running_worker(settings, ("usage",)):
        await _until_the_worker_restarted_from_the_new_log(settings)
        await emit(settings, after * 4)  # 1,600 records, 400 events
        await wait_for_rows(settings.database_url, COUNT, 1400)
        await wait_for_rows(settings.database_url, CHECKPOINTS, 1600)
    live = await _live_state(settings.database_url)
    rebuilder = Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                          bootstrap_servers=settings.kafka_bootstrap_servers)
    with pytest.raises(RebuildError) as caught:
        await rebuilder.run()
    message = str(caught.value)
    assert "would hold 400 events but the live ones hold 1400" in message
    assert "\n" not in message
    assert await _live_state(settings.database_url) == live


async def test_a_log_that_no_longer_starts_at_offset_zero_is_refused() -> None:
    # Neither retention nor DeleteRecords moves a log start on the embedded broker, so the
    # check is given the beginning offsets a consumer would read from Apache Kafka.
    facts = LogFacts("usage", "ledger.usage", starts={0: 0, 1: 120, 2: 7},
                     ends={0: 10, 1: 500, 2: 90}, checkpoints={}, live_events=0, anchors={})
    refusal = await first_refusal(PREFLIGHT_CHECKS, facts)
    assert refusal is not None
    assert refusal.startswith("ledger.usage[1] starts at offset 120, not 0 (and 1 more")
    assert await first_refusal(PREFLIGHT_CHECKS, replace(facts, starts={0: 0, 1: 0, 2: 0})) \
        is None


def test_every_projection_has_a_table_that_counts_its_events() -> None:
    for name in PROJECTION_NAMES:
        assert EVENT_TABLES[name] in make_projection(name).tables()


async def test_rebuild_command_reports_the_swap(settings: Settings) -> None:
    await emit(settings, random_usage(random.Random(31), [uuid.uuid4()], 50))
    assert settings.kafka_bootstrap_servers
    await _send_to_partition(settings.kafka_bootstrap_servers, settings.topic_usage, 1, b"{")
    result = await asyncio.to_thread(_ledger, settings, "rebuild", "usage")
    assert result.returncode == 0, result.stderr
    assert "rebuilt usage: 50 events applied, 1 skipped" in result.stdout
    assert settings.database_url and await fetchval(settings.database_url, COUNT) == 50


async def test_traffic_while_the_rebuild_reads_the_log_is_not_a_lost_log(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live checkpoints moving past the log ends the rebuild has just read are no refusal."""
    rng = random.Random(37)
    keys = [uuid.uuid4() for _ in range(8)]
    await emit(settings, random_usage(rng, keys, 200))
    assert settings.database_url and settings.kafka_bootstrap_servers
    read_log_ends = rebuild_module._high_watermarks

    async def then_traffic(consumer: Any, partitions: list[TopicPartition]) -> Any:
        ends = await read_log_ends(consumer, partitions)
        await emit(settings, random_usage(rng, keys, 200))
        assert settings.database_url
        await wait_for_rows(settings.database_url, CHECKPOINTS, 400)  # the live worker's
        return ends

    monkeypatch.setattr(rebuild_module, "_high_watermarks", then_traffic)
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, CHECKPOINTS, 200)
        await Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                        bootstrap_servers=settings.kafka_bootstrap_servers).run()
    assert await fetchval(settings.database_url, COUNT) == 400  # caught up at the swap


async def test_a_log_that_is_not_the_live_checkpoints_one_is_refused() -> None:
    facts = LogFacts("usage", "ledger.usage", starts={0: 0}, ends={0: 900},
                     checkpoints={0: 300}, live_events=300, anchors={0: Verdict.DIFFERENT})
    refusal = await first_refusal(PREFLIGHT_CHECKS, facts)
    assert refusal is not None and "is not the log the live usage checkpoints came from" in refusal
    assert await first_refusal(PREFLIGHT_CHECKS, replace(facts, anchors={0: Verdict.SAME})) \
        is None
