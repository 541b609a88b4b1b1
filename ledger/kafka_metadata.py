"""The ledger's Kafka clients never create topics by asking about them.

A metadata request may ask the broker to create a topic it does not know, and aiokafka always
asks (``allow_auto_topic_creation=True``). A topic created that way gets the broker's defaults:
on Apache Kafka one partition and seven days of retention, on the embedded broker four
partitions. After a broker reset, the first client to ask about ``ledger.usage`` -- a producer
refreshing metadata, a projector rejoining -- recreated it with the wrong partition count
before ``ledger topics ensure`` could, and events for the missing partitions were lost (a
chaos run). The ledger's topics are created by ``ledger topics ensure`` only.

:func:`forbid_topic_autocreation` makes the metadata requests of every aiokafka client in this
process (producer, consumers, admin) say ``allow_auto_topic_creation=False``. It is installed
when ``ledger.producer``, ``ledger.topics`` or ``projections`` is imported; a gateway that
relies on auto-creation for topics of its own must create them explicitly.
"""

from __future__ import annotations

import aiokafka.admin.client as _admin
import aiokafka.client as _client
from aiokafka.protocol.metadata import MetadataRequest


class NoAutoCreateMetadataRequest(MetadataRequest):  # type: ignore[misc]
    """A MetadataRequest that never asks the broker to create the topics it names."""

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        super().__init__(topics, bool(allow_auto_topic_creation))


def forbid_topic_autocreation() -> None:
    """Idempotent; see the module docstring."""
    _client.MetadataRequest = NoAutoCreateMetadataRequest
    _admin.MetadataRequest = NoAutoCreateMetadataRequest
