"""Catalog import planning, its sources, and the catalog/models/cost commands end to end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ledger.catalog import load_price_map, load_snapshot, snapshot_path
from ledger.codec import dump_event
from ledger.events import ModelAliasSet, ModelRetired, ModelUpserted, ProviderUpserted
from ledger.settings import Settings
from ops.catalog_import import (
    CatalogImportError,
    CatalogState,
    plan_import,
    read_source,
    wire_raw,
)
from tests.projections.helpers import running_worker

NOW = datetime(2026, 11, 1, tzinfo=UTC)
EMPTY = CatalogState({}, {}, frozenset())
SMALL = ("gpt-4o", "gpt-4o-mini", "whisper-1", "azure_ai/gpt-6-astra", "azure_ai/gpt-astra-latest")


def _state_after(price_map: dict[str, dict[str, Any]]) -> CatalogState:
    """What the projection holds once ``price_map`` was imported."""
    plan = plan_import(price_map, EMPTY, valid_from=NOW)
    return CatalogState(
        {name: wire_raw(entry) for name, entry in price_map.items()},
        dict(plan.aliases_set), frozenset(plan.providers_added))


# -- planning (pure) --------------------------------------------------------------------------


@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_first_import_plans_every_entry_and_only_alias_of_aliases() -> None:
    snapshot = load_snapshot()
    raw_names = json.loads(snapshot_path().read_bytes()).keys()
    assert "sample_spec" in raw_names and "sample_spec" not in snapshot
    plan = plan_import(snapshot, EMPTY, valid_from=NOW)
    assert set(plan.added) == set(raw_names) - {"sample_spec"}
    upserts = [e for e in plan.events if isinstance(e, ModelUpserted)]
    assert {e.name for e in upserts} == set(snapshot)
    assert all(e.valid_from == NOW for e in upserts)
    # Aliases: the alias_of entries (those that lead to a model), no provider-prefixed rows.
    alias_entries = {n for n, e in snapshot.items() if "alias_of" in e}
    assert set(plan.aliases_set) <= alias_entries
    assert len(plan.aliases_set) >= len(alias_entries) - 2
    assert "openai/gpt-4o" not in plan.aliases_set
    providers = [e for e in plan.events if isinstance(e, ProviderUpserted)]
    assert len(providers) == len(plan.providers_added) > 100
    # Providers first, so a reader never sees a model whose provider row is missing.
    assert isinstance(plan.events[0], ProviderUpserted)


def test_odd_entries_import_whole_and_an_empty_name_is_reported() -> None:
    price_map = load_price_map(json.dumps({
        "sample_spec": {"input_cost_per_token": "see docs"},
        "weird-list": [1, 2, 3],
        "weird-shape": {"input_cost_per_token": {"nested": True}, "mode": 7},
        "": {"mode": "chat"},
    }).encode())
    plan = plan_import(price_map, EMPTY, valid_from=NOW)
    raws = {e.name: e.raw for e in plan.events if isinstance(e, ModelUpserted)}
    assert raws == {"weird-list": {"_unparsed": [1, 2, 3]},
                    "weird-shape": {"input_cost_per_token": {"nested": True}, "mode": 7}}
    assert list(plan.rejected) == [""]


def test_reimport_changes_retirements_and_owned_aliases() -> None:
    snapshot = load_snapshot()
    small = {n: snapshot[n] for n in SMALL}
    state = _state_after(small)
    assert plan_import(small, state, valid_from=NOW).events == []

    changed = dict(small)
    changed["gpt-4o"] = {**small["gpt-4o"], "output_cost_per_token": Decimal("0.000011")}
    plan = plan_import(changed, state, valid_from=NOW)
    assert [(type(e), getattr(e, "name", None)) for e in plan.events] == [
        (ModelUpserted, "gpt-4o")]

    # Same price spelled differently is not a change.
    respelled = dict(small)
    respelled["gpt-4o"] = {**small["gpt-4o"], "input_cost_per_token": Decimal("2.50E-6")}
    assert plan_import(respelled, state, valid_from=NOW).events == []

    manual = CatalogState(state.models, {**state.aliases, "my-4o": "gpt-4o"}, state.providers)
    gone = {k: v for k, v in small.items() if k not in ("whisper-1", "azure_ai/gpt-astra-latest")}
    plan = plan_import(gone, manual, valid_from=NOW)
    assert plan.retired == ("azure_ai/gpt-astra-latest", "whisper-1")
    assert plan.aliases_removed == ("azure_ai/gpt-astra-latest",)  # "my-4o" is not ours
    assert sum(isinstance(e, ModelRetired) for e in plan.events) == 2

    retargeted = {**small, "azure_ai/gpt-astra-latest": {"alias_of": "gpt-4o"}}
    plan = plan_import(retargeted, state, valid_from=NOW)
    assert next(e for e in plan.events if isinstance(e, ModelAliasSet)).model == "gpt-4o"


def test_raw_prices_travel_as_json_numbers() -> None:
    event = ModelUpserted(event_id=uuid.uuid4(), occurred_at=NOW, source="t", name="m",
                          raw={"input_cost_per_token": Decimal("0.0000025")}, valid_from=NOW)
    value = json.loads(dump_event(event), parse_float=Decimal)["raw"]["input_cost_per_token"]
    assert value == Decimal("0.0000025")


# -- sources ----------------------------------------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sources_file_url_and_snapshot(http_dir: tuple[Path, str]) -> None:
    directory, base = http_dir
    (directory / "map.json").write_bytes(snapshot_path().read_bytes())
    (directory / "broken.json").write_text("{not json")
    label, from_url = read_source(url=f"{base}/map.json", timeout_s=5)
    assert label.endswith("/map.json") and from_url == load_snapshot()
    label, from_file = read_source(file=directory / "map.json")
    assert from_file == from_url
    label, packaged = read_source()
    assert "snapshot" in label and packaged == from_url
    with pytest.raises(CatalogImportError, match="not valid JSON"):
        read_source(url=f"{base}/broken.json", timeout_s=5)
    with pytest.raises(CatalogImportError, match="cannot read"):
        read_source(url=f"{base}/missing.json", timeout_s=5)
    with pytest.raises(CatalogImportError, match="at most one"):
        read_source(file=directory / "map.json", url=f"{base}/map.json")


# -- the commands, as a user runs them --------------------------------------------------------


def _env(settings: Settings | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    if settings is None:  # nothing listens on port 1: the database is unreachable
        env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none"
        return env
    assert settings.database_url and settings.kafka_bootstrap_servers
    env.update(DATABASE_URL=settings.database_url,
               KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               TOPIC_USAGE=settings.topic_usage, TOPIC_KEYS=settings.topic_keys,
               TOPIC_CATALOG=settings.topic_catalog, CONSUMER_GROUP=settings.consumer_group,
               LEDGER_HOME=str(settings.ledger_home))
    return env


async def _ledger(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _hand_total(prompt: int, completion: int) -> Decimal:
    entry: dict[str, Decimal] = json.loads(
        snapshot_path().read_bytes(), parse_float=Decimal)["gpt-4o"]
    return prompt * entry["input_cost_per_token"] + completion * entry["output_cost_per_token"]


@pytest.mark.slow  # the CLI in a child process
async def test_cost_without_a_database_uses_the_snapshot() -> None:
    code, out = await _ledger(_env(None), "cost", "openai/gpt-4o",
                              "--prompt", "1000", "--completion", "500")
    assert code == 0, out
    # 1000 x 0.0000025 + 500 x 0.00001 = 0.0025 + 0.005
    assert _hand_total(1000, 500) == Decimal("0.0075")
    assert out.splitlines()[-1] == "total 0.0075 USD"
    assert "packaged snapshot" in out and "database not reachable" in out
    assert re.search(r"^text_input +1000 x 0.0000025 = 0.0025 ", out, re.MULTILINE)
    assert re.search(r"^text_output +500 x 0.00001 = 0.005 ", out, re.MULTILINE)

    code, out = await _ledger(_env(None), "cost", "gpt-4o", "--prompt", "10",
                              "--completion", "0", "--images", "2")
    assert code == 2, out
    assert re.search(r"^images +2 x unpriced", out, re.MULTILINE)
    assert out.splitlines()[-1].startswith("total 0.000025 USD (incomplete: unpriced images")

    # Generated images at the output image price (0.134), not the input one (0.0011).
    code, out = await _ledger(_env(None), "cost", "gemini-3-pro-image-preview",
                              "--output-images", "2")
    assert code == 0, out
    assert re.search(r"^output_images +2 x 0.134 = 0.268 ", out, re.MULTILINE)
    assert out.splitlines()[-1] == "total 0.268 USD"

    code, out = await _ledger(_env(None), "cost", "gpt-4o", "--prompt", "10",
                              "--cache-read", "20")
    assert code == 1 and out.startswith("error: cache_read + cache_creation"), out
    assert "part of prompt_tokens" in out and len(out.splitlines()) == 1


async def test_import_show_search_and_cost_against_the_database(
    settings: Settings, tmp_path: Path
) -> None:
    snapshot = json.loads(snapshot_path().read_bytes())
    small = tmp_path / "small.json"
    small.write_text(json.dumps({n: snapshot[n] for n in ("sample_spec", *SMALL)}))
    env = _env(settings)
    async with running_worker(settings, ("catalog",)):
        code, out = await _ledger(env, "catalog", "import", "--file", str(small), "--wait")
        assert code == 0, out
        assert "added" in out and "projection caught up" in out
        code, out = await _ledger(env, "catalog", "import", "--file", str(small))
        assert code == 0, out
        assert "emitted 0 events" in out

    code, out = await _ledger(env, "models", "show", "openai/gpt-4o")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:4] == ["name: gpt-4o", "asked: openai/gpt-4o (resolved via provider prefix)",
                         "provider: openai", "mode: chat"]
    assert "input_cost_per_token: 0.0000025" in lines
    assert "max_input_tokens: 128000" in lines
    assert any(ln.startswith("features: ") and "supports_vision" in ln for ln in lines)

    code, out = await _ledger(env, "models", "show", "azure_ai/gpt-astra-latest")
    assert code == 0 and out.startswith("name: azure_ai/gpt-6-astra\n"), out

    code, out = await _ledger(env, "models", "search", "gpt4o", "--limit", "2")
    assert code == 0, out
    found = [line.split()[1] for line in out.splitlines()]
    assert found == ["gpt-4o", "gpt-4o-mini"]

    code, out = await _ledger(env, "cost", "openai/gpt-4o", "--prompt", "1000",
                              "--completion", "500")
    assert code == 0, out
    assert "prices: database catalog" in out
    assert _hand_total(1000, 500) == Decimal("0.0075")
    assert out.splitlines()[-1] == "total 0.0075 USD"

    code, out = await _ledger(env, "models", "show", "no-such-model")
    assert code == 1 and "no model named 'no-such-model'" in out
