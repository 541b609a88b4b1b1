"""JSON Schema of the wire format, for gateways written in other languages."""

from __future__ import annotations

from typing import Any

from ledger.events import EVENT_ADAPTER


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) accepted by ``parse_event`` at the current versions.

    ``mode="validation"`` describes what a writer may send (e.g. a Decimal as a number or a
    string), which is the contract gateways need; older versions are documented in
    docs/events.md rather than in the schema because writers must emit the current one.
    """
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "LedgerEvent"
    return schema
