"""JSON Schema of the wire format, for gateways written in other languages.

The contract both ways: a message that declares its type's current ``schema_version`` is
valid under this schema exactly when ``parse_event`` accepts it (older versions are read
through ledger/upcasting.py and are not in the schema: writers send the current one).
tests/ledger/test_schema_property.py checks that with Python's jsonschema and with ajv in
strict mode.

pydantic writes the models' part; this module adds what pydantic leaves out: the field
types' definitions (``ledger.fields.wire`` names them), ``type`` and ``schema_version`` as
required (the models default them for Python callers, the reader does not), no
``discriminator`` keyword (not JSON Schema: ajv's strict mode refuses it; the required
``type`` const of each ``oneOf`` branch already selects one), and no lone surrogate in any
string.
"""

from __future__ import annotations

import sys
from typing import Any

from ledger import wiretext
from ledger.events import EVENT_ADAPTER
from ledger.fields import (
    MAX_ALERT_PERCENT,
    MAX_COUNT,
    MAX_DECIMAL_PLACES,
    MAX_JSON_DEPTH,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_VALUE_LENGTH,
    MAX_TEXT_LENGTH,
    MIN_DECIMAL_NUMBER,
    SECONDS_DIGITS,
    USD_DIGITS,
    WIRE_MARKER,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_REQUIRED = ("type", "schema_version")


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def _string(body: str, **bounds: Any) -> dict[str, Any]:
    return {"type": "string", **bounds, "pattern": wiretext.schema_pattern(body)}


def _decimal(digits: int, description: str) -> dict[str, Any]:
    text = wiretext.decimal_text(digits, MAX_DECIMAL_PLACES)
    return {
        "description": description,
        "anyOf": [
            _string(text, maxLength=wiretext.MAX_DECIMAL_TEXT),
            # A number is the double it denotes: 0, or from MIN_DECIMAL_NUMBER up.
            {"type": "number", "minimum": 0, "maximum": 0},
            {"type": "number", "minimum": MIN_DECIMAL_NUMBER, "maximum": 10**digits},
        ],
    }


def _json_definitions() -> dict[str, Any]:
    """Free-form JSON nested at most MAX_JSON_DEPTH levels: ``JsonN`` holds N more levels."""
    container = {"type": "object", "propertyNames": _ref("JsonString")}
    definitions: dict[str, Any] = {
        "JsonString": _string(wiretext.schema_text_body(wiretext.JSON_TEXT_REFUSES)),
        "JsonScalar": {"anyOf": [
            _ref("JsonString"),
            {"type": "number", "minimum": -sys.float_info.max, "maximum": sys.float_info.max},
            {"type": "boolean"},
            {"type": "null"},
        ]},
        "Json0": _ref("JsonScalar"),
    }
    for depth in range(1, MAX_JSON_DEPTH):
        inner = _ref(f"Json{depth - 1}")
        definitions[f"Json{depth}"] = {"anyOf": [
            _ref("JsonScalar"),
            {"type": "array", "items": inner},
            {**container, "additionalProperties": inner},
        ]}
    definitions["JsonObject"] = {
        "description": f"a JSON object nested at most {MAX_JSON_DEPTH} levels, no NUL",
        **container, "additionalProperties": _ref(f"Json{MAX_JSON_DEPTH - 1}"),
    }
    return definitions


def wire_definitions() -> dict[str, Any]:
    """The JSON Schema of each field type in ledger/fields.py, by its ``wire`` name."""
    return {
        "Uuid": {"format": "uuid", **_string(wiretext.UUID)},
        "Timestamp": {
            "description": "RFC 3339 with seconds and an offset, at most 9 fractional "
                           "digits, years 2000-2099 as written",
            "format": "date-time", **_string(wiretext.TIMESTAMP),
        },
        "Count": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        "Usd": _decimal(USD_DIGITS, "US dollars: a decimal string (or a JSON number)"),
        "Seconds": _decimal(SECONDS_DIGITS, "seconds: a decimal string (or a JSON number)"),
        "Text": _string(wiretext.schema_text_body(wiretext.PLAIN_TEXT_REFUSES),
                        minLength=1, maxLength=MAX_TEXT_LENGTH),
        "KeyHash": _string(wiretext.KEY_HASH),
        "BudgetScope": _string(
            wiretext.budget_scope(wiretext.schema_text_body(wiretext.PLAIN_TEXT_REFUSES)),
            maxLength=MAX_TEXT_LENGTH),
        "Percent": {"type": "integer", "minimum": 0, "maximum": MAX_ALERT_PERCENT},
        "MetadataKey": _string(wiretext.schema_text_body(wiretext.PLAIN_TEXT_REFUSES),
                               minLength=1, maxLength=MAX_METADATA_KEY_LENGTH),
        "MetadataValue": _string(wiretext.schema_text_body(wiretext.FREE_TEXT_REFUSES),
                                 maxLength=MAX_METADATA_VALUE_LENGTH),
        "Metadata": {
            "description": "string to string; null (Go's nil map) is {}",
            "anyOf": [
                {"type": "object", "maxProperties": MAX_METADATA_ENTRIES,
                 "propertyNames": _ref("MetadataKey"),
                 "additionalProperties": _ref("MetadataValue")},
                {"type": "null"},
            ],
        },
        "Names": {
            "description": "null (Go's nil slice) is []",
            "anyOf": [{"type": "array", "items": _ref("Text")}, {"type": "null"}],
        },
        **_json_definitions(),
    }


def _resolve(node: Any) -> Any:
    """Markers become references; bare strings refuse lone surrogates."""
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    resolved = {key: _resolve(value) for key, value in node.items()}
    name = resolved.pop(WIRE_MARKER, None)
    if name is not None:
        resolved["$ref"] = f"#/$defs/{name}"
    if resolved.get("type") == "string" and not {"pattern", "const", "enum"} & resolved.keys():
        resolved["pattern"] = wiretext.schema_pattern(wiretext.schema_text_body(""))
    return resolved


def _allows_null(node: dict[str, Any]) -> bool:
    return node.get("type") == "null" or any(_allows_null(b) for b in node.get("anyOf", ()))


def _require_envelope(model: dict[str, Any]) -> None:
    properties = model.get("properties", {})
    if not set(ENVELOPE_REQUIRED) <= properties.keys():
        return  # not an event model
    others = [name for name in model.get("required", ()) if name not in ENVELOPE_REQUIRED]
    model["required"] = [*ENVELOPE_REQUIRED, *others]
    for name, field in properties.items():
        # A default the wire cannot send (type, schema_version; api_key.updated's "absent")
        # would tell writers they may leave the field out or send null.
        if name in ENVELOPE_REQUIRED or (field.get("default", 0) is None
                                         and not _allows_null(field)):
            field.pop("default", None)


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (Draft 2020-12) of every event at its current version."""
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    schema.pop("discriminator", None)
    for model in schema["$defs"].values():
        _require_envelope(model)
    schema["$defs"].update(wire_definitions())
    resolved: dict[str, Any] = _resolve(schema)
    return {"$schema": DRAFT, "title": "LedgerEvent", **resolved}
