"""LedgerProducer against the real broker: every event type, back-pressure, lifecycle."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from aiokafka.errors import (
    BrokerNotAvailableError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    UnknownError,
)
from prometheus_client import REGISTRY

from ledger.events import (
    ApiKeyRevoked,
    EventBase,
    KeyMetadataDeleted,
    KeyMetadataSet,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelRetired,
    ModelUpserted,
    ProviderRemoved,
    ProviderUpserted,
    UsageRecorded,
    dump_event,
    event_headers,
    parse_event,
    partition_key,
)
from ledger.exceptions import (
    ProducerClosedError,
    ProducerError,
    RecordRejectedError,
    SettingsError,
)
from ledger.keys import generate_key
from ledger.producer import Delivery, LedgerProducer, Spool, partition_for_key
from ledger.settings import load_settings
from ops.devstack.ports import free_port
from tests.ledger.producer_helpers import (
    consume,
    create_topics,
    fail_next_batches,
    private_broker,
    unique_topics,
)
from tests.polling import wait_until

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


def one_of_each(producer: LedgerProducer) -> list[EventBase]:
    build = producer.events
    key_id = uuid4()
    envelope = {"source": producer.source, "occurred_at": NOW}
    return [
        build.usage(
            api_key_id=key_id,
            request_id="r-1",
            model="gpt-4o",
            prompt_tokens=100,
            completion_tokens=20,
            cost_usd=Decimal("0.0015"),
            metadata={"team": "search"},
        ),
        build.create_key(
            api_key_id=key_id, name="k", plaintext_key=generate_key(), max_budget_usd="10.00"
        ),
        build.update_key(api_key_id=key_id, max_budget_usd=None),
        build.set_key_metadata(api_key_id=key_id, key="env", value="prod"),
        KeyMetadataDeleted(event_id=uuid4(), api_key_id=key_id, key="env", **envelope),
        KeyMetadataSet(event_id=uuid4(), api_key_id=key_id, key="a", value="b", **envelope),
        ApiKeyRevoked(event_id=uuid4(), api_key_id=key_id, reason="leaked", **envelope),
        ProviderUpserted(event_id=uuid4(), name="openai", features=["chat"], **envelope),
        ProviderRemoved(event_id=uuid4(), name="openai", **envelope),
        ModelUpserted(
            event_id=uuid4(),
            name="gpt-4o",
            raw={"input_cost_per_token": 2.5e-06},
            valid_from=NOW,
            **envelope,
        ),
        ModelRetired(event_id=uuid4(), name="gpt-4o", **envelope),
        ModelAliasSet(event_id=uuid4(), alias="fast", model="gpt-4o", **envelope),
        ModelAliasRemoved(event_id=uuid4(), alias="fast", **envelope),
    ]


async def test_every_event_type_round_trips_through_kafka(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics, partitions=3)
    async with LedgerProducer(kafka_bootstrap, topics=topics, source="gw-test") as producer:
        events = one_of_each(producer)
        assert len({event.type for event in events}) == 12
        futures = [await producer.emit(event) for event in events]
        deliveries = await asyncio.gather(*futures)
    assert all(delivery.status == "sent" for delivery in deliveries)
    by_id = {event.event_id: event for event in events}
    messages = await consume(kafka_bootstrap, [topics.usage, topics.keys, topics.catalog], 13)
    assert len(messages) == len(events)
    for message in messages:
        decoded = parse_event(message.value)
        original = by_id[decoded.event_id]
        assert decoded == original
        assert message.value == dump_event(original)
        assert message.key == partition_key(original)
        assert list(message.headers) == event_headers(original)
        assert message.partition == partition_for_key(message.key, 3)  # Kafka's partitioner
    topic_of = {message.value: message.topic for message in messages}
    assert topic_of[dump_event(events[0])] == topics.usage
    assert topic_of[dump_event(events[1])] == topics.keys
    assert topic_of[dump_event(events[-1])] == topics.catalog


async def test_per_key_order_is_kept(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics, partitions=4)
    keys = [uuid4() for _ in range(5)]
    async with LedgerProducer(kafka_bootstrap, topics=topics, max_pending=50) as producer:
        for number in range(500):
            await producer.emit(
                producer.events.usage(
                    api_key_id=keys[number % 5],
                    request_id=str(number),
                    model="m",
                    prompt_tokens=number,
                    completion_tokens=0,
                )
            )
    messages = await consume(kafka_bootstrap, [topics.usage], 500)
    assert len(messages) == 500
    for key in keys:
        counts = [
            parse_event(m.value).prompt_tokens  # type: ignore[union-attr]
            for m in messages
            if m.key == str(key).encode()
        ]
        assert counts == sorted(counts)
        assert len(counts) == 100


async def test_back_pressure_bounds_pending_records(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    bound = 64
    highest = 0

    async with LedgerProducer(kafka_bootstrap, topics=topics, max_pending=bound) as producer:

        async def writer(offset: int) -> None:
            nonlocal highest
            for number in range(offset, offset + 1000):
                await producer.emit(
                    producer.events.usage(
                        api_key_id=uuid4(),
                        request_id=str(number),
                        model="m",
                        prompt_tokens=1,
                        completion_tokens=1,
                    )
                )
                highest = max(highest, producer.pending)

        await asyncio.gather(*(writer(offset) for offset in range(0, 3000, 1000)))
        await producer.flush()
        assert producer.pending == 0
    assert 0 < highest <= bound
    messages = await consume(kafka_bootstrap, [topics.usage], 3000)
    assert len(messages) == 3000


async def test_a_cancelled_delivery_future_still_releases_capacity(kafka_bootstrap: str) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    async with LedgerProducer(kafka_bootstrap, topics=topics, max_pending=4) as producer:
        for _ in range(20):
            future = await producer.emit(producer.events.revoke_key(api_key_id=uuid4()))
            future.cancel()  # what asyncio.wait_for does to it on a timeout
        await asyncio.wait_for(producer.flush(), 10)
        assert producer.pending == 0
    assert len(await consume(kafka_bootstrap, [topics.keys], 20)) == 20


async def test_lifecycle_errors(kafka_bootstrap: str, tmp_path: Path) -> None:
    producer = LedgerProducer(kafka_bootstrap, topics=unique_topics())
    event = producer.events.revoke_key(api_key_id=uuid4())
    with pytest.raises(ProducerClosedError):
        await producer.emit(event)
    async with producer:
        with pytest.raises(TypeError, match="not a ledger event"):
            await producer.emit("usage")  # type: ignore[arg-type]
    with pytest.raises(ProducerClosedError):
        await producer.emit(event)
    # Without a spool there is nowhere to keep events, so an unreachable broker is an error.
    with pytest.raises(ProducerError):
        await LedgerProducer("127.0.0.1:1").start()


async def test_emit_and_wait_and_from_settings(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_usage=topics.usage,
        topic_keys=topics.keys,
        topic_catalog=topics.catalog,
        topic_alerts=topics.alerts,
        spool_dir=tmp_path / "spool",
    )
    producer = LedgerProducer.from_settings(settings)
    assert producer.topics == topics
    assert producer.spool_dir == tmp_path / "spool"
    # Without SPOOL_DIR the spool is LEDGER_HOME/spool; an override wins over the settings.
    home = load_settings(kafka_bootstrap_servers=kafka_bootstrap, ledger_home=tmp_path / "home")
    assert LedgerProducer.from_settings(home).spool_dir == tmp_path / "home" / "spool"
    assert LedgerProducer.from_settings(home, spool_dir=None).spool_dir is None
    async with producer:
        delivery = await producer.emit_and_wait(producer.events.revoke_key(api_key_id=uuid4()))
    assert delivery == Delivery("sent", topics.keys, delivery.partition, delivery.offset)
    assert delivery.offset is not None


def test_from_settings_without_a_broker_names_the_setting() -> None:
    settings = load_settings(kafka_bootstrap_servers=None)
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS is not set"):
        LedgerProducer.from_settings(settings)


# -- nothing acknowledged is lost: broker errors spool, a stalled spool is visible ----------


def usage(producer: LedgerProducer, number: int, key_id: UUID | None = None) -> UsageRecorded:
    return producer.events.usage(api_key_id=key_id or uuid4(), request_id=str(number),
                                 model="m", prompt_tokens=1, completion_tokens=1)


@pytest.mark.parametrize("error", [
    TopicAuthorizationFailedError("ACLs changed"),  # broker-side: fixed by an operator
    BrokerNotAvailableError(),
    UnknownError(),
    MessageSizeTooLargeError(),  # for a batch of 20: the batch is too large, not a record
], ids=type)
async def test_a_non_retriable_broker_error_spools_the_batch(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    key_id = uuid4()
    async with LedgerProducer(kafka_bootstrap, topics=topics, spool_dir=tmp_path / "spool",
                              resend_backoff_max_s=0.2) as producer:
        await producer.emit_and_wait(usage(producer, -1, key_id))  # connected, partitions known
        fail_next_batches(monkeypatch, [error])
        # emit() does not yield: the 20 events form one batch for the key's partition.
        events = [usage(producer, n, key_id) for n in range(20)]
        futures = [await producer.emit(event) for event in events]
        deliveries = await asyncio.gather(*futures, return_exceptions=True)
    assert [d for d in deliveries if isinstance(d, BaseException)] == []
    assert {d.status for d in deliveries if isinstance(d, Delivery)} == {"spooled"}
    messages = await consume(kafka_bootstrap, [topics.usage], 21)
    assert {e.event_id for e in events} <= {parse_event(m.value).event_id for m in messages}


async def test_a_record_too_large_on_its_own_is_parked_and_reported(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    spool_dir = tmp_path / "spool"
    async with LedgerProducer(kafka_bootstrap, topics=topics, spool_dir=spool_dir) as producer:
        await producer.emit_and_wait(usage(producer, -1))
        fail_next_batches(monkeypatch, [MessageSizeTooLargeError()])
        event = usage(producer, 0)
        future = await producer.emit(event)
        with pytest.raises(RecordRejectedError, match=str(spool_dir / "rejected")):
            await future
        # The producer goes on sending directly: nothing was spooled for the live path.
        assert (await producer.emit_and_wait(usage(producer, 1))).status == "sent"
    # Not retried (the broker would refuse it again), but kept for an operator.
    rejected = Spool(spool_dir / "rejected")
    try:
        records, _ = rejected.read(10)
    finally:
        rejected.close()
    assert [parse_event(r.value).event_id for r in records] == [event.event_id]


async def test_a_stalled_spool_is_visible(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    labels = {"spool_dir": str(spool_dir)}
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens: the spool cannot drain
    producer = LedgerProducer(nobody, spool_dir=spool_dir, resend_backoff_max_s=0.05,
                              close_timeout_s=0.5)
    with caplog.at_level(logging.DEBUG, logger="ledger.producer"):
        async with producer:
            for number in range(10):
                assert (await producer.emit_and_wait(usage(producer, number))).status == "spooled"

            async def stalled_a_while() -> bool:
                return sum("resend failed" in r.getMessage() for r in caplog.records) >= 5

            await wait_until(stalled_a_while, 20, "five failed resend attempts")
            assert REGISTRY.get_sample_value("ledger_producer_spooling", labels) == 1
            spooled_bytes = REGISTRY.get_sample_value("ledger_producer_spool_bytes", labels)
            assert spooled_bytes is not None and spooled_bytes > 0
            age = REGISTRY.get_sample_value("ledger_producer_spool_oldest_age_seconds", labels)
            assert age is not None and age > 0
            assert REGISTRY.get_sample_value(
                "ledger_producer_spool_resend_failures_total", labels) >= 5
    # One WARNING giving the age and size, not one per attempt.
    stalls = [r for r in caplog.records if r.levelno >= logging.WARNING
              and "cannot drain" in r.getMessage()]
    assert len(stalls) == 1, [r.getMessage() for r in stalls]
    assert f"{int(spooled_bytes)} bytes" in stalls[0].getMessage()
    assert "oldest spooled" in stalls[0].getMessage()
    # A closed producer is no longer reported.
    assert REGISTRY.get_sample_value("ledger_producer_spool_bytes", labels) is None


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_round_trip(kafka_bootstrap: str, codec: str) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_compression=codec,
                             topic_usage=topics.usage, topic_keys=topics.keys,
                             topic_catalog=topics.catalog)
    producer = LedgerProducer.from_settings(settings)
    assert producer.compression_type == (None if codec == "none" else codec)
    async with producer:
        events = [usage(producer, n) for n in range(200)]
        for event in events:
            await producer.emit(event)
    messages = await consume(kafka_bootstrap, [topics.usage], 200)
    assert sorted(m.value for m in messages) == sorted(dump_event(e) for e in events)


def test_an_unknown_codec_is_refused_with_one_line() -> None:
    with pytest.raises(SettingsError, match=r"^invalid setting KAFKA_COMPRESSION: .*brotli"):
        load_settings(kafka_compression="brotli")
    with pytest.raises(ValueError, match="compression_type"):
        LedgerProducer("127.0.0.1:1", compression_type="brotli")


@pytest.mark.servers  # starts its own
async def test_events_sent_across_a_broker_reset_are_never_lost(tmp_path: Path) -> None:
    """The chaos run's loss: after a memory-only broker restarts, its first acknowledgements
    (at offset 0, for a topic it no longer has) must not be trusted, and asking about a topic
    must not create it with the broker's default partition count."""
    topics = unique_topics()
    key_ids = [uuid4() for _ in range(12)]
    with private_broker(tmp_path) as broker:
        await create_topics(broker.bootstrap_servers, topics, partitions=6)
        async with LedgerProducer(broker.bootstrap_servers, topics=topics,
                                  spool_dir=tmp_path / "spool", resend_backoff_max_s=0.2,
                                  request_timeout_ms=3000) as producer:
            before = [usage(producer, n, key_ids[n % 12]) for n in range(120)]
            assert {(await f).status for f in [await producer.emit(e) for e in before]} \
                == {"sent"}
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            after = [usage(producer, n, key_ids[n % 12]) for n in range(120)]
            deliveries = await asyncio.gather(*[await producer.emit(e) for e in after])
            # Not one of them may claim to be in the new broker's (missing) topic.
            assert {d.status for d in deliveries} == {"spooled"}
            admin_topics = await _topic_names(broker.bootstrap_servers)
            assert topics.usage not in admin_topics  # nobody auto-created it meanwhile
            await create_topics(broker.bootstrap_servers, topics, partitions=6)
            async def drained() -> bool:  # the spool drains once the topics are back
                return not producer.spool_stats().spooling

            await wait_until(drained, 30, "the spool to drain")
        messages = await consume(broker.bootstrap_servers, [topics.usage], 120)
    assert {e.event_id for e in after} <= {parse_event(m.value).event_id for m in messages}


async def _topic_names(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
