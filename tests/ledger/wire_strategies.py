"""Hypothesis strategies for message bodies, derived from the printed JSON Schema.

Generic over the events: every event, property and field type is read from
``event_json_schema()``, so a field added to a model is generated and mutated like the
others. Each wire definition (``$defs`` that ledger/fields.py names) has a strategy of valid
values and one of near misses; a definition without them makes ``strategy_for`` fail, so a
new kind of field cannot slip past the property test unexercised.

A body is a valid event, or a valid event with one to three mutations: a property dropped,
added, or replaced by a near miss or by junk, and JSON text the standard library does not
write (``1e3``, ``1000.0``, ``1e400``, ``NaN``, a lone surrogate escape, a duplicate key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from hypothesis import strategies as st

from ledger.fields import (
    MAX_ALERT_PERCENT,
    MAX_COUNT,
    MAX_JSON_DEPTH,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_VALUE_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_USD,
    MIN_DECIMAL_NUMBER,
)
from ledger.schema import event_json_schema

SCHEMA = event_json_schema()
DEFS: dict[str, Any] = SCHEMA["$defs"]
EVENTS: dict[str, dict[str, Any]] = {
    DEFS[name]["properties"]["type"]["const"]: DEFS[name]
    for name in (branch["$ref"].rsplit("/", 1)[1] for branch in SCHEMA["oneOf"])
}


@dataclass(frozen=True)
class Raw:
    """JSON text written as is, for what json.dumps never writes."""

    text: str


def encode(value: Any, *, ascii_only: bool, indent: int | None) -> bytes:
    raws: list[str] = []

    def hide(item: Any) -> Any:
        if isinstance(item, Raw):
            raws.append(item.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(item, dict):  # a Raw key is a string literal written as is
            return {hide(key): hide(child) for key, child in item.items()}
        if isinstance(item, list):
            return [hide(child) for child in item]
        return item

    text = json.dumps(hide(value), ensure_ascii=ascii_only, indent=indent, allow_nan=False)
    for number, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{number}\x00"), raw, 1)
    return text.encode("utf-8")


# -- text ------------------------------------------------------------------------------

CONTROLS = [chr(code) for code in (*range(0x20), 0x7F)]
_PRINTABLE = st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROLS)
_TRICKY_CHARS = st.sampled_from([*CONTROLS, "\u2028", "\ufeff", "😀", "é", "\u0085", " "])


def plain_text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.one_of(st.text(_PRINTABLE, min_size=min_size, max_size=min(max_size, 12)),
                     st.just("x" * max_size))


@st.composite
def near_text(draw: st.DrawFn, max_size: int) -> Any:
    base = draw(st.text(_PRINTABLE, max_size=8))
    at = draw(st.integers(0, len(base)))
    return draw(st.one_of(
        st.just(""), st.just("x" * max_size), st.just("x" * (max_size + 1)),
        _TRICKY_CHARS.map(lambda char: base[:at] + char + base[at:]),
        st.just(base + "\n"),
        st.just(Raw(json.dumps(base)[:-1] + '\\ud800"')),  # a lone surrogate escape
        st.just(Raw(json.dumps(base)[:-1] + '\\udc00x"')),
    ))


def free_text(max_size: int) -> st.SearchStrategy[str]:
    alphabet = st.characters(blacklist_categories=("Cs",),
                             blacklist_characters=[c for c in CONTROLS if c not in "\t\n\r"])
    return st.one_of(st.text(alphabet, max_size=12), st.just("v" * max_size))


# -- numbers ---------------------------------------------------------------------------

_NUMBER_TEXTS = ["1e3", "1000.0", "1E400", "-1e400", "1e-400", "-0", "-0.0", "0.0", "1.0e0",
                 "1" + "0" * 25, "NaN", "Infinity", "-Infinity", "1e308", "1e309", "2.5e-06",
                 "1000000000.0000000001", "9.999999999999999e-15", "1e-14", "1e-31"]
RAW_NUMBERS = st.sampled_from(_NUMBER_TEXTS).map(Raw)


def near_counts() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([-1, MAX_COUNT + 1, 1.5, 2**63, True, False, "1000", "0", 1000.0, -0.0,
                         float(MAX_COUNT), 1e10]),
        st.integers().map(str), RAW_NUMBERS, st.floats(allow_nan=False, allow_infinity=False),
    )


@st.composite
def decimal_strings(draw: st.DrawFn) -> str:
    places = draw(st.integers(0, 30))
    value = draw(st.decimals(min_value=0, max_value=MAX_USD, places=places))
    style = draw(st.sampled_from(["str", "plain", "lower-e", "trailing-zeros"]))
    if style == "str":
        return str(value)  # what Python's writer sends: 1E-7, 0E-10, 500.00
    if style == "lower-e":
        return format(value, "e")  # 1.5e-7, as JavaScript and Go write small numbers
    plain = format(value, "f")
    if style == "trailing-zeros":
        zeros = "0" * draw(st.integers(1, 20))
        return plain + zeros if "." in plain else f"{plain}.{zeros}"
    return plain


def decimals() -> st.SearchStrategy[Any]:
    return st.one_of(
        decimal_strings(),
        st.floats(min_value=MIN_DECIMAL_NUMBER, max_value=float(MAX_USD)),
        st.integers(0, int(MAX_USD)), st.just(0.0),
    )


@st.composite
def near_decimal_strings(draw: st.DrawFn) -> str:
    valid = draw(decimal_strings())
    at = draw(st.integers(0, len(valid)))
    return draw(st.one_of(
        st.text(alphabet="0123456789.eE+-", max_size=12),
        st.sampled_from(["-1", "NaN", "Infinity", "-0", "+1", ".5", "1.", "01", "1,50", " 1",
                         "1_000", "0x10", "١", "15E-8", "1E-31", "1E-30", "1E+9", "1E+10",
                         "1.0000000001E+9", "1000000000.0", "1000000000.1", "0E-999",
                         "0E-1000", "0." + "0" * 29 + "1", "0." + "0" * 30 + "1",
                         "1" + "0" * 100]),
        st.sampled_from(list("0.eE+- ,_\n")).map(lambda char: valid[:at] + char + valid[at:]),
        st.just(valid + "0" * 90),
    ))


def near_decimals() -> st.SearchStrategy[Any]:
    return st.one_of(
        near_decimal_strings(), RAW_NUMBERS,
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=0, max_value=1e-13), st.integers(-5, 2 * int(MAX_USD)),
        st.sampled_from([True, -0.0, float(MAX_USD), 1000000000.0000001, MIN_DECIMAL_NUMBER]),
    )


# -- timestamps and identifiers ----------------------------------------------------------

@st.composite
def timestamps(draw: st.DrawFn) -> str:
    day = draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    clock = draw(st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)))
    fraction = draw(st.text("0123456789", max_size=9))
    offset = draw(st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))
        .map(lambda o: f"{o[0]}{o[1]:02}:{o[2]:02}"),
    ))
    separator = draw(st.sampled_from("Tt"))
    return (f"{day.isoformat()}{separator}{clock[0]:02}:{clock[1]:02}:{clock[2]:02}"
            + (f".{fraction}" if fraction else "") + offset)


@st.composite
def near_timestamps(draw: st.DrawFn) -> Any:
    valid = draw(timestamps())
    at = draw(st.integers(0, len(valid)))
    return draw(st.one_of(
        st.integers(0, 4 * 10**9), st.integers(0, 4 * 10**9).map(str),
        st.sampled_from([
            "2026-11-25 09:30:00Z", "2026-11-25T09:30Z", "2026-11-25T09:30:00",
            "2026-11-25", "2026-11-25T09:30:00.1234567891Z", "2026-11-25T09:30:00,5Z",
            "2026-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z", "2026-11-25T24:00:00Z", "2026-12-31T23:59:60Z",
            "2026-11-25T09:30:00+24:00", "2026-11-25T09:30:00+0200", "2026-11-25T09:30:00+02",
            "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
            "2000-01-01T00:00:00+14:00", "2099-12-31T23:59:59.999999999-23:59",
            "2026-11-25T09:30:00.Z", "２０２６-11-25T09:30:00Z", "2026-11-25T09:30:00Z ",
        ]),
        st.sampled_from(list("0Z:.-+ T\n")).map(lambda char: valid[:at] + char + valid[at:]),
        st.just(valid[:at] + valid[at + 1:]),
    ))


def uuids() -> st.SearchStrategy[str]:
    return st.builds(lambda value, upper: str(value).upper() if upper else str(value),
                     st.uuids(), st.booleans())


def near_uuids() -> st.SearchStrategy[Any]:
    return st.uuids().flatmap(lambda value: st.sampled_from([
        value.hex, f"{{{value}}}", f"urn:uuid:{value}", str(value)[:-1], f"{value}0",
        f"{value}\n", str(value).replace("-", "_"), "00000000-0000-0000-0000-000000000000",
        str(value).replace(str(value)[0], "g", 1), value.int,
    ]))


def key_hashes() -> st.SearchStrategy[str]:
    return st.binary(min_size=32, max_size=32).map(bytes.hex)


def near_key_hashes() -> st.SearchStrategy[Any]:
    return key_hashes().flatmap(lambda digest: st.sampled_from(
        [digest.upper(), digest[:-1], digest + "0", digest + "\n", "g" + digest[1:]]))


def budget_scopes() -> st.SearchStrategy[str]:
    return st.one_of(st.uuids().map(lambda value: f"key:{value}"),
                     plain_text(1, MAX_TEXT_LENGTH - 6).map(lambda name: f"owner:{name}"))


def near_budget_scopes() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.uuids().flatmap(lambda value: st.sampled_from([
            f"key:{str(value).upper()}", f"key:{value.hex}", str(value), f"key:{value}\n",
            f"team:{value}"])),
        st.sampled_from(["owner:", "key:", "owner", "", "owner:a\x00", "owner:" + "x" * 507,
                         "owner:" + "x" * 506]))


# -- collections and free-form JSON ------------------------------------------------------

def metadata(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> Any:
    return st.one_of(
        st.none(), st.dictionaries(keys, values, max_size=4),
        st.just({f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES)}),
    )


def near_metadata() -> st.SearchStrategy[Any]:
    key, value = plain_text(1, MAX_METADATA_KEY_LENGTH), free_text(MAX_METADATA_VALUE_LENGTH)
    return st.one_of(
        st.just({f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)}),
        st.builds(lambda k, v: {k: v}, near_text(MAX_METADATA_KEY_LENGTH), value),
        st.builds(lambda k, v: {k: v}, key, near_text(MAX_METADATA_VALUE_LENGTH)),
        st.builds(lambda k, v: {k: v}, key, st.one_of(st.none(), st.integers(), st.booleans(),
                                                       st.just({}), st.just([]))),
        st.just([]), st.just("team=a"),
    )


def json_values(depth: int) -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=6),
    )
    if depth == 0:
        return scalar
    inner = json_values(depth - 1)
    return st.one_of(scalar, st.lists(inner, max_size=2),
                     st.dictionaries(st.text(max_size=4).filter(lambda k: "\x00" not in k),
                                     inner, max_size=2))


def nested(levels: int, leaf: Any, as_list: bool) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value] if as_list else {"k": value}
    return value


def json_objects() -> st.SearchStrategy[Any]:
    deep = st.builds(lambda levels, leaf, as_list: {"deep": nested(levels, leaf, as_list)},
                     st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH - 1), json_values(0),
                     st.booleans())
    shallow = st.dictionaries(st.text(max_size=6).filter(lambda k: "\x00" not in k),
                              json_values(2), max_size=4)
    return st.one_of(shallow, deep)


def near_json_objects() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda levels, as_list: {"deep": nested(levels, 1, as_list)},
                  st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 1), st.booleans()),
        st.sampled_from([{"a": "x\x00"}, {"a\x00": 1}, {"a": ["\x00"]}, [], "x", 1, None]),
        RAW_NUMBERS.map(lambda raw: {"n": raw}),
        st.just({"n": Raw("1" + "0" * 400)}),
        st.just({"s": Raw('"x\\ud83d"')}),
    )


# -- per wire definition ----------------------------------------------------------------

WIRE: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "Uuid": (uuids(), near_uuids()),
    "Timestamp": (timestamps(), near_timestamps()),
    "Count": (st.one_of(st.integers(0, MAX_COUNT), st.sampled_from([0, MAX_COUNT])),
              near_counts()),
    "Usd": (decimals(), near_decimals()),
    "Seconds": (decimals(), near_decimals()),
    "Text": (plain_text(1, MAX_TEXT_LENGTH), near_text(MAX_TEXT_LENGTH)),
    "KeyHash": (key_hashes(), near_key_hashes()),
    "MetadataKey": (plain_text(1, MAX_METADATA_KEY_LENGTH), near_text(MAX_METADATA_KEY_LENGTH)),
    "MetadataValue": (free_text(MAX_METADATA_VALUE_LENGTH),
                      near_text(MAX_METADATA_VALUE_LENGTH)),
    "Metadata": (metadata(plain_text(1, MAX_METADATA_KEY_LENGTH),
                          free_text(MAX_METADATA_VALUE_LENGTH)), near_metadata()),
    "Names": (st.one_of(st.none(), st.lists(plain_text(1, MAX_TEXT_LENGTH), max_size=3)),
              st.one_of(near_text(MAX_TEXT_LENGTH).map(lambda text: [text]),
                        st.sampled_from([[None], [1], "gpt-4o", {}]))),
    "JsonObject": (json_objects(), near_json_objects()),
    "BudgetScope": (budget_scopes(), near_budget_scopes()),
    "Percent": (st.integers(0, MAX_ALERT_PERCENT),
                st.sampled_from([-1, MAX_ALERT_PERCENT + 1, 1.5, "50", True, None])),
}

JUNK = st.one_of(st.none(), st.booleans(), st.integers(),
                 st.floats(allow_nan=False, allow_infinity=False),
                 st.text(max_size=5), st.just([]), st.just({}), RAW_NUMBERS)


def strategy_for(node: dict[str, Any], *, near: bool = False) -> st.SearchStrategy[Any]:
    """Valid values of a property's schema (``near``: values just outside it, and some in)."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name not in WIRE:
            raise LookupError(f"no strategies for the wire definition {name!r}: add them")
        valid, near_miss = WIRE[name]
        return st.one_of(near_miss, valid) if near else valid
    if "anyOf" in node:
        return st.one_of(*(strategy_for(branch, near=near) for branch in node["anyOf"]))
    if "const" in node:
        return st.just(node["const"]) if not near else JUNK
    if "enum" in node:
        values = st.sampled_from(node["enum"])
        return values if not near else st.one_of(values.map(lambda v: str(v).upper()), JUNK)
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans() if not near else st.sampled_from(["true", 1, 0, "false", None])
    if kind == "array" and "items" in node:
        return st.lists(strategy_for(node["items"], near=near), max_size=3)
    if kind == "string" and set(node) <= {"type", "pattern", "title", "description",
                                          "default", "maxLength", "minLength"}:
        # A bare str field: anything but a lone surrogate, which schema and reader refuse.
        return plain_text(node.get("minLength", 0), node.get("maxLength", 40)) if not near \
            else near_text(node.get("maxLength", 40))
    raise LookupError(f"no strategy for the schema {node!r}: extend tests/ledger/"
                      "wire_strategies.py")


@st.composite
def valid_events(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    model = EVENTS[event_type]
    required = set(model.get("required", ()))
    event: dict[str, Any] = {}
    for name, node in model["properties"].items():
        if name in required or draw(st.booleans()):
            event[name] = draw(strategy_for(node))
    return event


def _version_variants(current: int) -> st.SearchStrategy[Any]:
    return st.sampled_from([current + 1, current - 1, 0, -1, str(current), True, None,
                            Raw(f"{current}.0"), Raw(f"{current}e0"), 10**6])


@st.composite
def mutate(draw: st.DrawFn, event: dict[str, Any], event_type: str) -> Any:
    model = EVENTS[event_type]
    properties = model["properties"]
    action = draw(st.sampled_from(["drop", "near", "junk", "extra", "type", "version"]))
    if action == "drop" and event:
        del event[draw(st.sampled_from(sorted(event)))]
    elif action in ("near", "junk"):
        name = draw(st.sampled_from(sorted(properties)))
        value = strategy_for(properties[name], near=True) if action == "near" else JUNK
        event[name] = draw(value)
    elif action == "extra":
        event[draw(st.sampled_from(["surprise", "cost", "tokens_in", "Type", ""]))] = draw(JUNK)
    elif action == "type":
        event["type"] = draw(st.one_of(st.sampled_from(sorted(EVENTS)), JUNK,
                                       st.just(event_type.upper())))
    else:
        event["schema_version"] = draw(_version_variants(properties["schema_version"]["const"]))
    return event


@st.composite
def bodies(draw: st.DrawFn, event_type: str | None = None) -> bytes:
    """A message body: a valid event, or a mutated one, in one of several JSON spellings;
    of ``event_type`` when given, else of any type."""
    if event_type is None:
        event_type = draw(st.sampled_from(sorted(EVENTS)))
    event: Any = draw(valid_events(event_type))
    for _ in range(draw(st.integers(0, 3))):
        event = draw(mutate(event, event_type))
    body = encode(event, ascii_only=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    if draw(st.integers(0, 49)) == 0:
        event = draw(st.sampled_from([[event], "{}", None, 1]))  # not an object
    if isinstance(event, dict) and event and draw(st.integers(0, 9)) == 0:
        # A duplicate key before or after the real one: every reader keeps the last.
        name = draw(st.sampled_from(sorted(event)))
        junk = encode(draw(JUNK), ascii_only=True, indent=None).decode()
        pair = f"{json.dumps(name)}: {junk}"
        body = (b"{" + pair.encode() + b", " + body[1:] if draw(st.booleans())
                else body[:-1] + b", " + pair.encode() + b"}")
    return body
