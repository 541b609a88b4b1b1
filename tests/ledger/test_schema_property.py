"""Property: a body is valid under ``ledger schema`` if and only if ``parse_event`` accepts it.

Bodies come from tests/ledger/wire_strategies.py: valid events of every type, built from
the printed schema, and mutations of them. Each is judged by parse_event, by Python's
jsonschema (Draft 2020-12, format checking on) and by ajv (strict, ajv-formats) in one node
process; all three must agree, except that a body naming an older schema_version is
refused by the schema whatever the upcasters make of it. Every accepted event must also
survive being written again: dump_event's bytes are accepted and decode to the same event.

Cases: LEDGER_SCHEMA_EXAMPLES (default 1000) per run, printed at the end (``-s``);
``LEDGER_SCHEMA_EXAMPLES=50000 .venv/bin/pytest tests/ledger/test_schema_property.py`` for
a long one.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from ledger.codec import dump_event, parse_event
from ledger.fields import MAX_DECIMAL_PLACES, USD_DIGITS
from ledger.wiretext import MAX_DECIMAL_TEXT, compile_body, decimal_text
from tests.ledger.schema_oracles import (
    ajv_process,
    declares_older_version,
    load_json,
    python_schema_accepts,
    reader_accepts,
)
from tests.ledger.wire_strategies import EVENTS, bodies

pytestmark = pytest.mark.slow  # thousands of examples, judged by node (ajv) too

EXAMPLES = int(os.environ.get("LEDGER_SCHEMA_EXAMPLES", "1000"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


_SEARCH = settings(max_examples=2000, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _missing(seen: Counter[tuple[str, bool]]) -> list[tuple[str, bool]]:
    return [(kind, verdict) for kind in EVENTS for verdict in (True, False)
            if seen[kind, verdict] == 0]


def _type_of(body: bytes) -> str:
    is_json, value = load_json(body)
    kind = value.get("type") if is_json and isinstance(value, dict) else None
    return kind if isinstance(kind, str) and kind in EVENTS else "other"


def test_schema_and_parse_event_accept_the_same_bodies() -> None:
    seen: Counter[tuple[str, bool]] = Counter()
    older = 0
    with ajv_process() as ajv:

        def judge(body: bytes) -> None:
            nonlocal older
            reader = reader_accepts(body)
            python = python_schema_accepts(body)
            by_ajv, ajv_error = ajv.judge(body)
            if declares_older_version(body):
                assert not python and not by_ajv, "the schema describes current versions only"
                older += 1
                return
            seen[_type_of(body), reader] += 1
            assert python == reader, f"jsonschema {python}, parse_event {reader}: {body!r}"
            assert by_ajv == reader, f"ajv {by_ajv} ({ajv_error}), parse_event {reader}: {body!r}"
            if reader:
                event = parse_event(body)
                written = dump_event(event)
                assert reader_accepts(written) and python_schema_accepts(written), written
                assert ajv.accepts(written), written
                assert parse_event(written) == event

        PROPERTY(given(bodies())(judge))()
        # The generator must exercise both verdicts for every event type, or the property
        # says little: a strategy that only ever produced garbage would pass trivially. A
        # random run can miss one (a rare type's valid body, one run in many): that one is
        # then searched for among that type's bodies and judged like the others.
        for kind, verdict in _missing(seen):
            judge(find(bodies(kind), lambda body, kind=kind, verdict=verdict: (
                _type_of(body) == kind and reader_accepts(body) is verdict
                and not declares_older_version(body)), settings=_SEARCH))
    missing = _missing(seen)
    assert not missing, f"never generated: {missing}; seen {dict(seen)}"
    accepted = sum(count for (_, verdict), count in seen.items() if verdict)
    print(f"schema property: {seen.total() + older} bodies; {seen.total()} judged alike by "
          f"all three ({accepted} accepted), {older} naming an older schema_version")
    assert accepted >= 0.2 * seen.total(), dict(seen)
    assert seen.total() - accepted >= 0.2 * seen.total(), dict(seen)


# -- the decimal expression against its definition ----------------------------------------

_SYNTAX = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?|([1-9](\.[0-9]+)?|0(\.0+)?)[eE][+-]?[0-9]+")


def _decimal_by_definition(text: str) -> bool:
    """docs/events.md's words: JSON number syntax without a sign, normalized scientific
    notation, 0 <= x <= 1e9, at most 30 places once trailing zeros are dropped, at most 100
    characters, and a zero's exponent of at most 3 digits."""
    if len(text) > MAX_DECIMAL_TEXT or _SYNTAX.fullmatch(text) is None:
        return False
    value = Decimal(text)
    if value.is_zero():
        exponent = re.split("[eE]", text)[1:] or ["0"]
        return len(exponent[0].lstrip("+-").lstrip("0")) <= 3
    digits, exponent = value.as_tuple().digits, int(value.as_tuple().exponent)
    while digits[-1] == 0:  # trailing zeros do not count (not normalize(): it rounds)
        digits, exponent = digits[:-1], exponent + 1
    return value <= 10**USD_DIGITS and -exponent <= MAX_DECIMAL_PLACES


_DECIMAL = compile_body(decimal_text(USD_DIGITS, MAX_DECIMAL_PLACES))
_DIGITS = st.text("0123456789", max_size=34)


@st.composite
def decimal_like(draw: st.DrawFn) -> str:
    whole = draw(st.sampled_from(["", "0", "00", "1", "9", "10", "999999999", "1000000000",
                                  "1000000001"]) | _DIGITS)
    point = draw(st.sampled_from(["", "."]))
    fraction = draw(_DIGITS) + draw(st.sampled_from(["", "0" * 5, "0" * 40]))
    exponent = draw(st.sampled_from(["", "e", "E"]))
    if exponent:
        sign = draw(st.sampled_from(["", "+", "-"]))
        exponent += sign + draw(st.sampled_from(["", "0", "00"])) + str(draw(st.integers(0, 40)))
    return whole + point + (fraction if point else "") + exponent


@settings(max_examples=EXAMPLES, deadline=None)
@given(decimal_like())
def test_decimal_expression_means_its_definition(text: str) -> None:
    regex = len(text) <= MAX_DECIMAL_TEXT and _DECIMAL.fullmatch(text) is not None
    assert regex == _decimal_by_definition(text), text
