"""Loading the BerriAI map, aliases, providers and the re-import diff."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from ledger.catalog import (
    CatalogDiff,
    aliases_from_price_map,
    diff_catalog,
    load_price_map,
    load_snapshot,
    providers_from_price_map,
    resolve_model_name,
    snapshot_path,
)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, dict[str, Any]]:
    return load_snapshot()


def test_snapshot_is_packaged_with_its_license() -> None:
    assert snapshot_path().is_file()
    notice = (snapshot_path().parent / "LICENSE-litellm").read_text()
    assert "MIT License" in notice
    assert "Berri AI" in notice


def test_load_skips_sample_spec_and_parses_decimals(snapshot: dict[str, dict[str, Any]]) -> None:
    on_disk = json.loads(snapshot_path().read_bytes())
    assert "sample_spec" not in snapshot
    assert len(snapshot) == len(on_disk) - 1
    assert snapshot["gpt-4o"]["input_cost_per_token"] == Decimal("0.0000025")
    assert isinstance(snapshot["gpt-4o"]["input_cost_per_token"], Decimal)


def test_load_from_bytes_keeps_odd_entries() -> None:
    source = b'{"sample_spec": {}, "a": {"input_cost_per_token": 1e-6}, "b": [1], "c": NaN}'
    loaded = load_price_map(source)
    assert set(loaded) == {"a", "b", "c"}
    assert loaded["a"]["input_cost_per_token"] == Decimal("0.000001")
    assert loaded["b"] == {"_unparsed": [1]}
    assert loaded["c"]["_unparsed"].is_nan()


@pytest.mark.parametrize("source", [b"[]", b"{not json", b"\xff\xfe"])
def test_load_rejects_non_maps(source: bytes) -> None:
    with pytest.raises(ValueError, match="price map"):
        load_price_map(source)


def test_load_from_path(tmp_path: Any) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"m": {"mode": "chat"}}')
    assert load_price_map(path) == {"m": {"mode": "chat"}}
    assert load_price_map(str(path)) == {"m": {"mode": "chat"}}


# -- diff --------------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_rediff_of_identical_maps_is_empty(snapshot: dict[str, dict[str, Any]]) -> None:
    diff = diff_catalog(snapshot, copy.deepcopy(snapshot))
    assert diff.is_noop
    assert len(diff.unchanged) == len(snapshot)


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_float_and_decimal_parses_are_the_same_catalog(snapshot: dict[str, dict[str, Any]]) -> None:
    as_floats = json.loads(snapshot_path().read_bytes())  # floats, and sample_spec included
    assert diff_catalog(as_floats, snapshot).is_noop


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_one_changed_price_is_exactly_one_change(snapshot: dict[str, dict[str, Any]]) -> None:
    current = copy.deepcopy(snapshot)
    current["gpt-4o"]["input_cost_per_token"] = Decimal("0.000003")
    diff = diff_catalog(snapshot, current)
    assert diff.changed == ("gpt-4o",)
    assert diff.added == diff.retired == ()
    assert len(diff.unchanged) == len(snapshot) - 1


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_removed_entry_is_retired_and_new_one_added(snapshot: dict[str, dict[str, Any]]) -> None:
    current = copy.deepcopy(snapshot)
    del current["gpt-4o"]
    current["brand-new-model"] = {"mode": "chat", "litellm_provider": "openai"}
    diff = diff_catalog(snapshot, current)
    assert diff == CatalogDiff(
        added=("brand-new-model",),
        retired=("gpt-4o",),
        unchanged=tuple(sorted(set(snapshot) - {"gpt-4o"})),
    )


def test_diff_tells_true_from_one_and_sees_nested_changes() -> None:
    before = {"m": {"supports_vision": True, "x": {"a": [1, 2]}}}
    assert diff_catalog(before, {"m": {"supports_vision": 1, "x": {"a": [1, 2]}}}).changed == ("m",)
    assert diff_catalog(before, {"m": {"supports_vision": True, "x": {"a": [2, 1]}}}).changed == (
        "m",
    )
    assert diff_catalog({"m": {"p": 1e-06}}, {"m": {"p": Decimal("1E-6")}}).is_noop


# -- aliases -----------------------------------------------------------------------------------


def test_alias_of_entries_resolve(snapshot: dict[str, dict[str, Any]]) -> None:
    aliases = aliases_from_price_map(snapshot)
    declared = {n for n, e in snapshot.items() if "alias_of" in e}
    assert declared <= aliases.keys()
    for alias in declared:
        canonical = aliases[alias]
        assert canonical in snapshot
        assert "alias_of" not in snapshot[canonical]
    assert resolve_model_name("azure/gpt-astra-latest", snapshot, aliases) == "azure/gpt-6-astra"


def test_provider_prefixed_names_resolve(snapshot: dict[str, dict[str, Any]]) -> None:
    aliases = aliases_from_price_map(snapshot)
    assert snapshot["gpt-4o"]["litellm_provider"] == "openai"
    assert "openai/gpt-4o" not in snapshot
    assert resolve_model_name("openai/gpt-4o", snapshot, aliases) == "gpt-4o"
    assert resolve_model_name("gpt-4o", snapshot, aliases) == "gpt-4o"
    # an explicit prefixed entry is itself, never redirected
    assert resolve_model_name("xai/grok-4.3", snapshot, aliases) == "xai/grok-4.3"
    # the wrong provider does not resolve, nor does a bare name of a prefixed entry
    assert resolve_model_name("anthropic/gpt-4o", snapshot, aliases) is None
    assert "grok-4.3" not in snapshot
    assert resolve_model_name("grok-4.3", snapshot, aliases) is None


def test_alias_chains_cycles_and_dangling() -> None:
    price_map: dict[str, dict[str, Any]] = {
        "real": {"litellm_provider": "acme", "input_cost_per_token": 1},
        "a": {"alias_of": "b"},
        "b": {"alias_of": "real"},
        "loop1": {"alias_of": "loop2"},
        "loop2": {"alias_of": "loop1"},
        "dangling": {"alias_of": "nowhere"},
        "acme/prefixed": {"litellm_provider": "acme"},
    }
    aliases = aliases_from_price_map(price_map)
    assert aliases == {"a": "real", "b": "real"}  # provider prefixes are a rule, not aliases
    assert resolve_model_name("a", price_map) == "real"
    assert resolve_model_name("acme/real", price_map) == "real"
    # An alias_of entry that leads nowhere is still itself (it has no prices), as in the
    # database: ledger.catalog.naming is the one rule.
    assert resolve_model_name("loop1", price_map) == "loop1"
    assert resolve_model_name("dangling", price_map) == "dangling"
    assert resolve_model_name("nowhere", price_map) is None
    # The part after the provider prefix may itself contain a slash.
    assert resolve_model_name("acme/acme/prefixed", price_map) == "acme/prefixed"


# -- providers ---------------------------------------------------------------------------------


def test_providers(snapshot: dict[str, dict[str, Any]]) -> None:
    providers = providers_from_price_map(snapshot)
    expected = {e["litellm_provider"] for e in snapshot.values() if e.get("litellm_provider")}
    assert set(providers) == expected
    openai = providers["openai"]
    assert openai.model_count == sum(
        1 for e in snapshot.values() if e.get("litellm_provider") == "openai"
    )
    assert "chat" in openai.modes
    assert "supports_vision" in openai.features
    assert openai.base_url is None  # not in the price map; operators set it
    assert sum(p.model_count for p in providers.values()) == sum(
        1 for e in snapshot.values() if e.get("litellm_provider")
    )
