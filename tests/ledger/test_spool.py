"""The durable spool: file format and recovery, and no event lost across broker or process death."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.codec import parse_event
from ledger.events import UsageRecorded
from ledger.exceptions import SpoolLockedError
from ledger.producer import LedgerProducer
from ledger.producer import spool as spool_module
from ledger.producer.spool import Spool, SpoolRecord
from ledger.producer.spool_frames import encode_record
from ledger.routing import Topics
from tests.ledger.producer_helpers import consume, create_topics, private_broker, unique_topics
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]


def record(number: int, key: bytes | None = b"k") -> SpoolRecord:
    return SpoolRecord("t", key, f"value-{number}".encode(), [("type", b"x"), ("n", b"")])


def test_append_read_commit_truncates(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(n) for n in range(10)] + [record(10, key=None)])
    first, offset = spool.read(4)
    assert first == [record(n) for n in range(4)]
    spool.commit(offset)
    rest, end = spool.read(100)
    assert rest == [record(n) for n in range(4, 10)] + [record(10, key=None)]
    spool.commit(end)
    assert spool.is_empty()
    assert spool.path.stat().st_size == 0
    spool.close()


def test_reopen_replays_in_order_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(n) for n in range(5)])
    spool.close()
    whole = (tmp_path / spool_module.SPOOL_FILE).read_bytes()
    # A crash in the middle of the next append: half a frame at the end.
    torn = encode_record(record(99), spooled_at_ms=0)
    (tmp_path / spool_module.SPOOL_FILE).write_bytes(whole + torn[: len(torn) // 2])
    reopened = Spool(tmp_path)
    assert reopened.recovery.torn_tail_bytes == len(torn) // 2
    assert reopened.recovery.damaged_regions == 0
    assert reopened.read(100)[0] == [record(n) for n in range(5)]
    reopened.append([record(5)])
    assert reopened.read(100)[0] == [record(n) for n in range(6)]
    reopened.close()


def test_spool_is_exclusive(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()


def test_compaction_keeps_the_unsent_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "COMPACT_THRESHOLD_BYTES", 64)
    spool = Spool(tmp_path)
    spool.append([record(n) for n in range(20)])
    size_before = spool.path.stat().st_size
    _, offset = spool.read(15)
    spool.commit(offset)
    assert spool.path.stat().st_size < size_before
    assert spool.read(100)[0] == [record(n) for n in range(15, 20)]
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.read(100)[0] == [record(n) for n in range(15, 20)]
    reopened.close()


def test_large_records(tmp_path: Path) -> None:
    big = SpoolRecord("t", b"k", os.urandom(3 * 1024 * 1024), [])
    spool = Spool(tmp_path)
    spool.append([record(1), big, record(2)])
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.read(10)[0] == [record(1), big, record(2)]
    reopened.close()


def usage_event(producer: LedgerProducer, number: int) -> UsageRecorded:
    return producer.events.usage(
        api_key_id=uuid4(), request_id=str(number), model="m", prompt_tokens=1, completion_tokens=1
    )


@pytest.mark.servers  # starts its own
async def test_broker_down_then_back_loses_nothing(tmp_path: Path) -> None:
    with private_broker(tmp_path) as broker:
        topics = unique_topics()
        await create_topics(broker.bootstrap_servers, topics)
        producer = LedgerProducer(
            broker.bootstrap_servers,
            topics=topics,
            spool_dir=tmp_path / "spool",
            request_timeout_ms=1500,
            resend_backoff_max_s=0.5,
            close_timeout_s=30,
        )
        async with producer:
            first = await producer.emit_and_wait(usage_event(producer, 0))
            assert first.status == "sent"
            broker.stop()
            down = [usage_event(producer, n) for n in range(1, 201)]
            futures = [await producer.emit(event) for event in down]
            deliveries = await asyncio.gather(*futures)
            assert {delivery.status for delivery in deliveries} == {"spooled"}
            assert producer.spooling
            broker.start()
            await create_topics(broker.bootstrap_servers, topics)  # memory storage: recreate
            after = [usage_event(producer, n) for n in range(201, 251)]
            for event in after:
                await producer.emit(event)
        # close() drained the spool: nothing is left behind.
        assert spool_is_empty(tmp_path / "spool")
        expected = {event.event_id for event in down + after}
        messages = await consume(broker.bootstrap_servers, [topics.usage], len(expected))
        assert {parse_event(message.value).event_id for message in messages} >= expected


SPOOLING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from uuid import uuid4
    from ledger.routing import Topics
    from ledger.producer import LedgerProducer

    async def main() -> None:
        topics = Topics(sys.argv[2], sys.argv[3], sys.argv[4])
        # Nothing listens on port 1: every event goes to the spool.
        async with LedgerProducer("127.0.0.1:1", topics=topics, spool_dir=sys.argv[1]) as p:
            while True:
                events = [
                    p.events.usage(api_key_id=uuid4(), request_id="r", model="m",
                                   prompt_tokens=1, completion_tokens=1)
                    for _ in range(50)
                ]
                futures = [await p.emit(event) for event in events]
                for event, future in zip(events, futures):
                    delivery = await future
                    assert delivery.status == "spooled"
                    print(event.event_id, flush=True)

    asyncio.run(main())
    """
)


async def test_killed_producer_loses_no_acknowledged_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics: Topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    spool_dir = tmp_path / "spool"
    with (tmp_path / "child.log").open("wb") as child_log:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SPOOLING_CHILD,
            str(spool_dir),
            *topics_args(topics),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=child_log,
        )
    assert child.stdout is not None
    acknowledged: set[str] = set()
    try:
        while len(acknowledged) < 2000:
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line, (tmp_path / "child.log").read_text()
            acknowledged.add(line.decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)  # mid-spool: no close, no flush
        await child.wait()
    remaining = await child.stdout.read()
    acknowledged |= {line.strip() for line in remaining.decode().splitlines() if line.strip()}
    # The next start drains the backlog before anything new.
    async with LedgerProducer(kafka_bootstrap, topics=topics, spool_dir=spool_dir) as producer:
        assert producer.spooling
    assert spool_is_empty(spool_dir)
    messages = await consume(kafka_bootstrap, [topics.usage], len(acknowledged))
    arrived = {str(parse_event(message.value).event_id) for message in messages}
    assert acknowledged <= arrived


def spool_is_empty(directory: Path) -> bool:
    spool = Spool(directory)
    try:
        return spool.is_empty()
    finally:
        spool.close()


def topics_args(topics: Topics) -> list[str]:
    return [topics.usage, topics.keys, topics.catalog]


@pytest.mark.servers  # starts its own
async def test_close_is_bounded_and_the_spool_survives_it(tmp_path: Path) -> None:
    with private_broker(tmp_path) as broker:
        topics = unique_topics()
        broker.stop()
        spool_dir = tmp_path / "spool"
        producer = LedgerProducer(
            broker.bootstrap_servers, topics=topics, spool_dir=spool_dir, close_timeout_s=1.0
        )
        await producer.start()
        events = [usage_event(producer, n) for n in range(100)]
        for event in events:
            await producer.emit(event)
        started = asyncio.get_running_loop().time()
        await producer.close()
        assert asyncio.get_running_loop().time() - started < 5
        assert not spool_is_empty(spool_dir)
        broker.start()
        await create_topics(broker.bootstrap_servers, topics)
        async with LedgerProducer(broker.bootstrap_servers, topics=topics, spool_dir=spool_dir):
            pass  # start drains the backlog; close waits for it
        assert spool_is_empty(spool_dir)
        messages = await consume(broker.bootstrap_servers, [topics.usage], len(events))
        assert {parse_event(m.value).event_id for m in messages} == {e.event_id for e in events}


@pytest.mark.servers  # starts its own
async def test_producer_started_before_the_broker_catches_up(tmp_path: Path) -> None:
    with private_broker(tmp_path) as broker:
        topics = unique_topics()
        broker.stop()
        producer = LedgerProducer(
            broker.bootstrap_servers,
            topics=topics,
            spool_dir=tmp_path / "spool",
            resend_backoff_max_s=0.2,
        )
        async with producer:
            assert producer.spooling
            events = [usage_event(producer, n) for n in range(50)]
            for event in events:
                assert (await producer.emit_and_wait(event)).status == "spooled"
            broker.start()
            await create_topics(broker.bootstrap_servers, topics)
            async def drained() -> bool:  # the resend task connects, drains, sends directly
                return not producer.spooling

            await wait_until(drained, 10, "the spool to drain")
            last = usage_event(producer, 50)
            assert (await producer.emit_and_wait(last)).status == "sent"
        messages = await consume(broker.bootstrap_servers, [topics.usage], 51)
        arrived = {parse_event(m.value).event_id for m in messages}
        assert arrived == {e.event_id for e in [*events, last]}
