"""The gateway-side writer: ``async with LedgerProducer(...) as producer``."""

from __future__ import annotations

from ledger.events import Topics
from ledger.producer.builders import UNSET, EventBuilder
from ledger.producer.producer import LedgerProducer
from ledger.producer.sending import Delivery, partition_for_key
from ledger.producer.spool import Spool, SpoolRecord

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
