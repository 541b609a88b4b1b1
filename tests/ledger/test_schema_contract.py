"""The JSON Schema is the contract, both ways: the cases issue 11 named, one by one.

Each case is one message body and the verdict docs/events.md gives it; parse_event,
Python's jsonschema (format checking on) and ajv (strict, with ajv-formats) must all give
it. tests/ledger/test_schema_property.py asks the same of generated bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from ops.cli import app
from tests.ledger.schema_oracles import (
    Ajv,
    ajv_process,
    compile_with_ajv,
    python_schema_accepts,
    reader_accepts,
)
from tests.ledger.test_wire_format import CURRENT

pytestmark = pytest.mark.slow  # judged by node (ajv) and by jsonschema (seconds to import)

BASES: dict[str, dict[str, Any]] = {example.body["type"]: example.body for example in CURRENT}
DROP = object()
NANO = "2026-11-25T09:30:00.123456789Z"


def body(event_type: str, **changes: Any) -> bytes:
    fields = dict(BASES[event_type])
    for name, value in changes.items():
        if value is DROP:
            fields.pop(name, None)
        else:
            fields[name] = value
    return json.dumps(fields).encode()


def usage(**changes: Any) -> bytes:
    return body("usage.recorded", **changes)


def text(template: str) -> bytes:
    """A usage body with one field's JSON written by hand (``@`` marks where it goes)."""
    fields = dict(BASES["usage.recorded"])
    name, _, raw = template.partition("=")
    fields[name] = "@"
    return json.dumps(fields).replace('"@"', raw).encode()


def nested(levels: int) -> Any:
    """``levels`` objects, one inside the other, around a string."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


REFUSED = [
    # The envelope: required on the wire, not defaulted.
    ("no-type", usage(type=DROP)),
    ("no-schema-version", usage(schema_version=DROP)),
    ("schema-version-as-string", usage(schema_version="2")),
    ("schema-version-true", body("api_key.revoked", schema_version=True)),
    # Decimal strings.
    *((f"decimal-{value}", usage(cost_usd=value)) for value in (
        "-1", "NaN", "Infinity", "1,50", " 1", "+1", ".5", "1.", "01", "١", "1_000", "-0",
        "0x10", "15E-8", "1E-31", "1E+10", "1.0000000001E+9", "1000000000.1",
        "0." + "0" * 30 + "1", "1" + "0" * 100)),
    ("decimal-true", usage(cost_usd=True)),
    ("seconds-negative-number", usage(input_seconds=-0.5)),
    # A number is a double; below 1e-14 one could not be written back with 30 places.
    ("decimal-tiny-number", usage(cost_usd=1e-31)),
    ("decimal-below-smallest-number", usage(cost_usd=9.999999999999999e-15)),
    ("budget-nan-string", body("api_key.created", max_budget_usd="NaN")),
    # Timestamps.
    ("epoch-int", usage(occurred_at=1764063000)),
    ("epoch-string", usage(occurred_at="1764063000")),
    ("space-separator", usage(occurred_at="2026-11-25 09:30:00Z")),
    ("no-seconds", usage(occurred_at="2026-11-25T09:30Z")),
    ("ten-fraction-digits", usage(occurred_at="2026-11-25T09:30:00.1234567891Z")),
    ("comma-fraction", usage(occurred_at="2026-11-25T09:30:00,5Z")),
    ("naive", usage(occurred_at="2026-11-25T09:30:00")),
    ("not-a-leap-year", usage(occurred_at="2026-02-29T00:00:00Z")),
    ("leap-second", usage(occurred_at="2026-12-31T23:59:60Z")),
    ("offset-24h", usage(occurred_at="2026-11-25T09:30:00+24:00")),
    ("year-1999", usage(occurred_at="1999-12-31T23:59:59Z")),
    ("year-2100", usage(occurred_at="2100-01-01T00:00:00Z")),
    ("expires-epoch", body("api_key.created", expires_at=1798761600)),
    # Counts.
    ("count-numeric-string", usage(prompt_tokens="1000")),
    ("count-true", usage(prompt_tokens=True)),
    ("count-fraction", usage(prompt_tokens=1.5)),
    ("count-negative", usage(prompt_tokens=-1)),
    ("count-too-large", usage(prompt_tokens=10**9 + 1)),
    ("output-images-negative", usage(output_images=-1)),
    ("output-images-fraction", usage(output_images=0.5)),
    ("count-huge-exponent", text("prompt_tokens=1e400")),
    # Booleans and nulls.
    ("enabled-string", body("api_key.created", enabled="true")),
    ("enabled-one", body("api_key.created", enabled=1)),
    ("update-name-null", body("api_key.updated", name=None)),
    ("update-allowed-models-null", body("api_key.updated", allowed_models=None)),
    ("update-enabled-null", body("api_key.updated", enabled=None)),
    ("raw-null", body("model.upserted", raw=None)),
    ("request-id-null", usage(request_id=None)),
    # Text.
    ("trailing-newline", usage(request_id="req\n")),
    ("nul", usage(request_id="req\x00")),
    ("lone-surrogate", text('request_id="req\\ud800"')),
    ("too-long", usage(request_id="r" * 513)),
    ("key-hash-newline", body("api_key.created",
                              key_hash=BASES["api_key.created"]["key_hash"] + "\n")),
    ("metadata-key-control", usage(metadata={"a\x01": "v"})),
    ("metadata-key-lone-surrogate", text('metadata={"a\\udc00": "v"}')),
    ("metadata-value-nul", usage(metadata={"a": "v\x00"})),
    # UUIDs in the other spellings a UUID parser takes.
    ("uuid-no-hyphens", usage(event_id="8d3e4f10000040008000000000000001")),
    ("uuid-braces", usage(event_id="{8d3e4f10-0000-4000-8000-000000000001}")),
    ("uuid-urn", usage(event_id="urn:uuid:8d3e4f10-0000-4000-8000-000000000001")),
    # Free-form JSON: what jsonb cannot hold, and nesting.
    ("raw-nul-value", body("model.upserted", raw={"a": ["x\x00"]})),
    ("raw-nul-key", body("model.upserted", raw={"a\x00": 1})),
    ("raw-too-deep", body("model.upserted", raw=nested(17))),
    ("raw-number-overflows", body("model.upserted").replace(b'"mode"', b'"big": 1e400, "mode"')),
    ("raw-nan", body("model.upserted").replace(b'"mode"', b'"nan": NaN, "mode"')),
    ("extra-field", usage(surprise=1)),
    # NaN and Infinity are not JSON even where a later duplicate key hides them.
    ("nan-under-a-duplicate-key", usage().replace(b'"source"', b'"source": NaN, "source"', 1)),
    ("infinity-under-a-duplicate-key", usage().replace(
        b'"images"', b'"images": -Infinity, "images"', 1)),
]

ACCEPTED = [
    *((f"decimal-{value}", usage(cost_usd=value)) for value in (
        "0.000389", "500.00", "0", "0.0", "1E-7", "1.5e-07", "1.50E-7", "0E-10", "1E+9",
        "1.000E+9", "1000000000", "1000000000.000", "1E-30", "0." + "0" * 29 + "1",
        "0.1" + "0" * 40, "9.99E+8")),
    ("decimal-number", usage(cost_usd=0.5)),
    ("decimal-integer", usage(cost_usd=5)),
    ("decimal-smallest-number", usage(cost_usd=1e-14)),
    ("decimal-number-30-places", usage(cost_usd=1.2345678901234567e-14)),
    ("seconds-number", usage(input_seconds=1.25)),
    ("rfc3339-nano", usage(occurred_at=NANO)),
    ("offset", usage(occurred_at="2026-11-25T09:30:00+02:00")),
    ("lowercase-t-z", usage(occurred_at="2026-11-25t09:30:00z")),  # RFC 3339 allows it
    ("unknown-offset", usage(occurred_at="2026-11-25T09:30:00-00:00")),
    ("year-2000-as-written", usage(occurred_at="2000-01-01T00:30:00+01:00")),
    ("year-2099-as-written", usage(occurred_at="2099-12-31T23:30:00-01:00")),
    ("leap-day", usage(occurred_at="2028-02-29T00:00:00Z")),
    ("count-with-zero-fraction", text("prompt_tokens=1000.0")),
    ("count-exponent", text("prompt_tokens=1e3")),
    ("count-maximum", usage(prompt_tokens=10**9)),
    ("output-images", usage(images=1, output_images=4)),
    ("schema-version-4.0", text("schema_version=4.0")),
    ("zero-counts-omitted", usage(cache_read_input_tokens=DROP, images=DROP, characters=DROP)),
    ("go-nil-metadata", usage(metadata=None)),
    ("go-nil-allowed-models", body("api_key.created", allowed_models=None)),
    ("go-nil-metadata-created", body("api_key.created", metadata=None)),
    ("go-nil-features", body("provider.upserted", features=None)),
    ("go-nil-config", body("provider.upserted", config=None)),
    ("update-owner-null", body("api_key.updated", owner=None)),
    ("metadata-value-newline", usage(metadata={"note": "a\tb\r\nc\n"})),
    ("astral-text", usage(request_id="req-😀")),
    ("uuid-uppercase", usage(event_id="8D3E4F10-0000-4000-8000-00000000000A")),
    ("raw-sixteen-deep", body("model.upserted", raw=nested(16))),
    ("raw-big-number", body("model.upserted").replace(b'"mode"', b'"big": 1e300, "mode"')),
    ("duplicate-key-last-wins", usage().replace(b'"prompt_tokens"', b'"prompt_tokens": -1, '
                                                b'"prompt_tokens"', 1)),
]


@pytest.fixture(scope="module")
def ajv() -> Iterator[Ajv]:
    with ajv_process() as judge:
        yield judge


def judges(ajv: Ajv) -> dict[str, Callable[[bytes], bool]]:
    return {"parse_event": reader_accepts, "jsonschema": python_schema_accepts,
            "ajv": ajv.accepts}


@pytest.mark.parametrize(("case", "message"), REFUSED, ids=[case for case, _ in REFUSED])
def test_refused_by_reader_and_schema(ajv: Ajv, case: str, message: bytes) -> None:
    verdicts = {name: judge(message) for name, judge in judges(ajv).items()}
    assert verdicts == dict.fromkeys(verdicts, False), case


@pytest.mark.parametrize(("case", "message"), ACCEPTED, ids=[case for case, _ in ACCEPTED])
def test_accepted_by_reader_and_schema(ajv: Ajv, case: str, message: bytes) -> None:
    verdicts = {name: judge(message) for name, judge in judges(ajv).items()}
    assert verdicts == dict.fromkeys(verdicts, True), case


def test_printed_schema_compiles_under_ajv_strict() -> None:
    printed = CliRunner().invoke(app, ["schema"])
    assert printed.exit_code == 0, printed.output
    schema = json.loads(printed.output)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    compiled = compile_with_ajv(printed.output)
    assert compiled.returncode == 0, compiled.stderr
    assert json.loads(compiled.stdout) == {"ready": True}


def test_the_date_time_format_is_really_checked() -> None:
    """Without jsonschema's format extras, "format" is silently not checked at all."""
    from tests.ledger.schema_oracles import python_validator

    checker = python_validator().format_checker
    assert checker is not None
    assert not checker.conforms("2026-02-30T00:00:00Z", "date-time")
    assert not checker.conforms("2026-11-25T09:30:00", "date-time")
    assert checker.conforms(NANO, "date-time")
