"""The gateway-side writer: ``async with LedgerProducer(...) as producer``."""

from __future__ import annotations

from ledger.kafka_metadata import forbid_topic_autocreation
from ledger.producer.builders import UNSET, EventBuilder
from ledger.producer.producer import LedgerProducer
from ledger.producer.sending import Delivery, partition_for_key
from ledger.producer.spool import Spool, SpoolRecord
from ledger.routing import Topics

__all__ = [
    "UNSET",
    "Delivery",
    "EventBuilder",
    "LedgerProducer",
    "Spool",
    "SpoolRecord",
    "Topics",
    "partition_for_key",
]

# The ledger's topics are created by `ledger topics ensure` only (ledger.kafka_metadata).
forbid_topic_autocreation()
