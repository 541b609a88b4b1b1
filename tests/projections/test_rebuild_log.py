"""Rebuilds against the log as it really is: records the replay skips, and logs that no longer
hold what the live tables were projected from.
"""

from __future__ import annotations

import random
import struct
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record._crc32c import crc as crc32c
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder

from ledger.settings import Settings
from projections import make_projection
from projections.rebuild import Rebuilder
from projections.status import log_ends
from tests.projections.helpers import emit, fetchval, random_usage

COUNT = "SELECT count(*) FROM usage_records"


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
