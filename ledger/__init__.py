"""usage-ledger, the write side: settings, events, producer, pricing, catalog, CLI."""

from ledger.exceptions import LedgerError
from ledger.settings import Settings, load_settings

__all__ = ["LedgerError", "Settings", "load_settings"]
