"""usage-ledger, the write side: settings, events, the producer, pricing and the catalog.

    async with LedgerProducer.from_settings(load_settings()) as producer:
        await producer.emit(producer.events.usage(api_key_id=..., request_id=..., ...))
"""

from ledger.codec import dump_event, parse_event
from ledger.events import Event, EventBase
from ledger.exceptions import LedgerError
from ledger.keys import generate_key, hash_key
from ledger.pricing import calculate_cost
from ledger.producer import Delivery, LedgerProducer
from ledger.settings import Settings, load_settings

__all__ = [
    "Delivery",
    "Event",
    "EventBase",
    "LedgerError",
    "LedgerProducer",
    "Settings",
    "calculate_cost",
    "dump_event",
    "generate_key",
    "hash_key",
    "load_settings",
    "parse_event",
]
