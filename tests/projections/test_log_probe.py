"""The log probe (projections.logidentity) when the broker does not answer."""

from __future__ import annotations

import gc
import warnings

from aiokafka import TopicPartition

from ops.devstack.ports import free_port
from projections.logidentity import Anchor, LogProbe, Verdict


async def test_a_probe_that_cannot_reach_the_broker_leaves_no_consumer_open() -> None:
    # A worker probes its anchors at every assignment; with the broker away each failed start
    # used to leave an aiokafka consumer behind, its client and tasks never stopped.
    probe = LogProbe(f"127.0.0.1:{free_port()}", timeout_s=0.5)
    anchors = {TopicPartition("usage", 0): Anchor(0, b"x" * 16)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            assert await probe.check(anchors) == {tp: Verdict.UNKNOWN for tp in anchors}
        await probe.close()
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed AIOKafkaConsumer" in str(w.message)]
    assert unclosed == []
