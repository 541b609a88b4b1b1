"""ModelRecord.from_berriai: every snapshot entry parses, nothing is lost, odd shapes survive."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.catalog import (
    COMMON_FEATURES,
    TYPED_PRICE_FIELDS,
    ModelRecord,
    load_price_map,
    snapshot_path,
    to_price,
)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, dict[str, Any]]:
    return load_price_map(snapshot_path())


@pytest.fixture(scope="module")
def records(snapshot: dict[str, dict[str, Any]]) -> dict[str, ModelRecord]:
    return {name: ModelRecord.from_berriai(name, entry) for name, entry in snapshot.items()}


def test_full_snapshot_parses_every_entry(
    snapshot: dict[str, dict[str, Any]], records: dict[str, ModelRecord]
) -> None:
    on_disk = json.loads(snapshot_path().read_bytes())
    assert "sample_spec" in on_disk
    assert len(records) == len(on_disk) - 1
    assert set(records) == set(on_disk) - {"sample_spec"}
    for name, record in records.items():
        assert record.name == name
        assert record.raw == snapshot[name]  # the whole entry, untouched


def test_snapshot_typed_fields_match_raw(records: dict[str, ModelRecord]) -> None:
    for record in records.values():
        for key in TYPED_PRICE_FIELDS:
            value = getattr(record, key)
            if value is not None:
                assert value == Decimal(str(record.raw[key]))
                assert record.prices[key] == value
        assert record.features == {
            k for k, v in record.raw.items() if k.startswith("supports_") and v is True
        }
        if isinstance(record.raw.get("litellm_provider"), str):
            assert record.provider == record.raw["litellm_provider"]


def test_record_has_forty_plus_typed_fields() -> None:
    assert len(ModelRecord.model_fields) >= 40
    for key in TYPED_PRICE_FIELDS + COMMON_FEATURES:
        assert key in ModelRecord.model_fields


def test_known_model(records: dict[str, ModelRecord]) -> None:
    gpt = records["gpt-4o"]
    assert gpt.provider == "openai"
    assert gpt.mode == "chat"
    assert gpt.input_cost_per_token == Decimal("0.0000025")
    assert gpt.cache_read_input_token_cost == Decimal("0.00000125")
    assert gpt.supports_vision is True
    assert gpt.supports("vision")
    assert isinstance(gpt.deprecation_date, date)
    assert gpt.max_input_tokens is not None
    assert gpt.max_input_tokens > 0


def test_snapshot_odd_shapes_kept_raw(records: dict[str, ModelRecord]) -> None:
    odd = [r for r in records.values() if "search_context_cost_per_query" in r.ignored_fields]
    assert odd
    assert all(isinstance(r.raw["search_context_cost_per_query"], dict) for r in odd)
    aliases = [r for r in records.values() if r.alias_of is not None]
    assert aliases
    assert all(r.input_cost_per_token is None for r in aliases)


def test_odd_shapes_never_fail_and_are_listed() -> None:
    entry: dict[str, Any] = {
        "input_cost_per_token": "free",
        "output_cost_per_token": [1, 2],
        "cache_read_input_token_cost": {"nested": 1},
        "cache_creation_input_token_cost": True,
        "output_cost_per_reasoning_token": float("nan"),
        "input_cost_per_audio_token": -1,
        "max_input_tokens": "128k",
        "max_output_tokens": 4096.5,
        "max_tokens": 8192.0,
        "mode": 3,
        "litellm_provider": None,
        "deprecation_date": "soon",
        "supports_vision": "yes",
        "supports_reasoning": True,
        "supports_something_new": True,
        "tiered_pricing": "cheap",
        "brand_new_field": {"x": [1, 2]},
    }
    record = ModelRecord.from_berriai("odd", entry)
    assert record.raw == entry
    assert record.input_cost_per_token is None
    assert record.output_cost_per_token is None
    assert record.cache_read_input_token_cost is None
    assert record.cache_creation_input_token_cost is None
    assert record.output_cost_per_reasoning_token is None
    assert record.input_cost_per_audio_token is None
    assert record.max_input_tokens is None
    assert record.max_output_tokens is None
    assert record.max_tokens == 8192
    assert record.mode is None
    assert record.provider is None
    assert record.deprecation_date is None
    assert record.supports_vision is None
    assert record.supports_reasoning is True
    assert record.features == {"supports_reasoning", "supports_something_new"}
    assert set(record.ignored_fields) == {
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "output_cost_per_reasoning_token",
        "input_cost_per_audio_token",
        "max_input_tokens",
        "max_output_tokens",
        "mode",
        "deprecation_date",
        "supports_vision",
        "tiered_pricing",
    }


def test_non_object_entry_is_kept() -> None:
    record = ModelRecord.from_berriai("weird", ["not", "a", "dict"])
    assert record.raw == {"_unparsed": ["not", "a", "dict"]}
    assert record.ignored_fields == ("_unparsed",)


def test_float_prices_are_converted_through_repr() -> None:
    record = ModelRecord.from_berriai(
        "m", {"input_cost_per_token": 1e-06, "output_cost_per_token": 3}
    )
    assert record.input_cost_per_token == Decimal("0.000001")
    assert record.input_cost_per_token != Decimal.from_float(1e-06)  # the binary expansion
    assert record.output_cost_per_token == Decimal(3)


def test_to_price_shapes() -> None:
    assert to_price(Decimal("1E-7")) == Decimal("1E-7")
    assert to_price("3e-7") == Decimal("3E-7")  # LiteLLM accepts numeric strings too
    assert to_price(0) == Decimal(0)
    bad: object
    for bad in (True, None, "x", float("inf"), Decimal("NaN"), -0.5, [1], {}):
        assert to_price(bad) is None


def test_tiered_pricing_is_typed() -> None:
    entry = {
        "tiered_pricing": [
            {"range": [0, 32000], "input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07},
            {"range": [32000, 128000], "input_cost_per_token": 3e-07},
        ]
    }
    record = ModelRecord.from_berriai("t", entry)
    assert [t.range_end for t in record.tiered_pricing] == [Decimal(32000), Decimal(128000)]
    assert record.tiered_pricing[0].prices["output_cost_per_token"] == Decimal("2E-7")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_keys = st.sampled_from(
    [*TYPED_PRICE_FIELDS, *COMMON_FEATURES, "max_tokens", "mode", "litellm_provider",
     "deprecation_date", "tiered_pricing", "off_peak_pricing", "alias_of", "anything"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(entry=st.dictionaries(_keys, _json, max_size=12))
@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_from_berriai_never_raises_and_keeps_raw(entry: dict[str, Any]) -> None:
    record = ModelRecord.from_berriai("fuzz", entry)
    assert record.raw == entry or record.raw.keys() == entry.keys()  # NaN != NaN
    for key in record.ignored_fields:
        assert key in entry
    for key in TYPED_PRICE_FIELDS:
        value = getattr(record, key)
        assert value is None or (isinstance(value, Decimal) and value.is_finite() and value >= 0)
