"""Three judges of one message body: parse_event, Python's jsonschema and ajv.

The contract (docs/events.md, "The JSON Schema is the contract"): a body is valid under
``ledger schema`` exactly when ``parse_event`` accepts it. The tests ask all three and
compare. ajv runs in one node process per test (tests/js/ajv_check.mjs), fed one case at a
time so that hypothesis can shrink a disagreement with ajv like any other.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from ledger.events import CURRENT_VERSIONS, parse_event
from ledger.exceptions import EventDecodeError
from ledger.schema import event_json_schema

AJV_SCRIPT = Path(__file__).resolve().parents[1] / "js" / "ajv_check.mjs"


def reader_accepts(body: bytes) -> bool:
    """parse_event's verdict; any exception other than EventDecodeError is a reader bug."""
    try:
        parse_event(body)
    except EventDecodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    # NaN and Infinity are Python's extensions, not JSON: such a body is no instance at all.
    raise ValueError(f"{name} is not JSON")


def load_json(body: bytes) -> tuple[bool, Any]:
    """(True, value) for a UTF-8 JSON text, (False, None) for anything else.

    Decoded strictly first: json.loads(bytes) would also take UTF-16 and a UTF-8 BOM.
    """
    try:
        return True, json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False, None


@cache
def python_validator() -> Any:  # a jsonschema.Draft202012Validator
    # Imported here: with its format checkers jsonschema takes seconds to import, which
    # collecting the test suite (the fast tier included) would otherwise pay.
    import jsonschema

    schema = event_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def python_schema_accepts(body: bytes) -> bool:
    is_json, instance = load_json(body)
    return is_json and python_validator().is_valid(instance)


def declares_older_version(body: bytes) -> bool:
    """A body naming an older schema_version of its type: read through the upcasters.

    The schema describes what writers send today, so it refuses these; whether parse_event
    reads one depends on ledger/upcasting.py, which is outside the equivalence.
    """
    is_json, instance = load_json(body)
    if not is_json or not isinstance(instance, dict):
        return False
    kind = instance.get("type")
    current = CURRENT_VERSIONS.get(kind) if isinstance(kind, str) else None
    version = instance.get("schema_version")
    return (
        current is not None
        and isinstance(version, int | float)
        and not isinstance(version, bool)
        and 1 <= version < current
    )


class Ajv:
    """One node process with the schema compiled in ajv's strict mode."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def judge(self, body: bytes) -> tuple[bool, str | None]:
        """(valid, first error) of ``body``, which must be UTF-8 (Kafka values are)."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        # ensure_ascii: a lone surrogate escape in the body survives the pipe as text.
        stdin.write(json.dumps({"text": body.decode("utf-8")}) + "\n")
        stdin.flush()
        answer = json.loads(stdout.readline())
        return bool(answer["valid"]), answer["error"]

    def accepts(self, body: bytes) -> bool:
        return self.judge(body)[0]


def compile_with_ajv(schema_text: str) -> subprocess.CompletedProcess[str]:
    """Run ajv_check.mjs on ``schema_text`` with no cases: exit 0 iff it compiles."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
        file.write(schema_text)
        file.flush()
        return subprocess.run(["node", str(AJV_SCRIPT), file.name], input="",
                              capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def ajv_process(schema: dict[str, Any] | None = None) -> Iterator[Ajv]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
        json.dump(schema if schema is not None else event_json_schema(), file)
        file.flush()
        process = subprocess.Popen(["node", str(AJV_SCRIPT), file.name], text=True,
                                   encoding="utf-8", stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert process.stdout is not None
            ready = process.stdout.readline()
            if not ready:
                assert process.stderr is not None
                raise AssertionError(process.stderr.read().strip() or "ajv_check.mjs died")
            yield Ajv(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=30)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
