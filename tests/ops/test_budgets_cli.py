"""`ledger budgets set | remove | list | alerts` as an operator runs them, live projector."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.producer import EventBuilder
from ledger.settings import Settings
from tests.ops.test_cli_errors import _env, _ledger, _one_line
from tests.projections.helpers import emit, running_worker, usage_event, wait_for_rows

build = EventBuilder("test")
CHECKPOINTS = "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints"


@pytest.mark.parametrize(("args", "field"), [
    (("key:nope", "--limit", "5", "--period", "day"), "scope"),
    (("team:x", "--limit", "5", "--period", "day"), "scope"),
    (("owner:ops", "--limit", "0", "--period", "day"), "'--limit'"),
    (("owner:ops", "--limit", "-3", "--period", "day"), "'--limit'"),
    (("owner:ops", "--limit", "ten", "--period", "day"), "'--limit'"),
    (("owner:ops", "--limit", "5", "--period", "year"), "'--period'"),
    (("owner:ops", "--limit", "5", "--period", "day", "--tz", "Mars/Base"), "'--tz'"),
    (("owner:ops", "--limit", "5", "--period", "day", "--alert", "50,x"), "--alert"),
    (("owner:nobody", "--limit", "5", "--period", "day"), "names no key"),
])
def test_bad_input_is_one_line_naming_the_option(
    tmp_path: Path, settings: Settings, args: tuple[str, ...], field: str,
) -> None:
    env = {**_env(tmp_path), **settings.environment()}
    result = _ledger(env, "budgets", "set", *args)
    assert result.returncode == 1
    _one_line(result, field)
    # Nothing was emitted: not even the spool holds an event.
    spool = Path(env["SPOOL_DIR"])
    assert not spool.exists() or not any(p.stat().st_size for p in spool.rglob("*")
                                         if p.is_file() and p.suffix != ".lock")


async def test_set_list_alerts_remove(tmp_path: Path, settings: Settings) -> None:
    assert settings.database_url
    env = {**_env(tmp_path), **settings.environment()}
    key = uuid.uuid4()
    async with running_worker(settings, ("keys", "usage")):
        await emit(settings, [build.create_key(api_key_id=key, name="k", plaintext_key="sk-c",
                                               owner="ops", max_budget_usd=Decimal("40"))])
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)
        done = await asyncio.to_thread(_ledger, env, "budgets", "set", "owner:ops", "--limit",
                                       "10", "--period", "month", "--tz", "Europe/Berlin",
                                       "--alert", "50,100")
        assert done.returncode == 0, done.stderr
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM budgets", 1)
        await emit(settings, [usage_event(key, cost=Decimal("6"))])
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM budget_alerts", 1)
        listed = await asyncio.to_thread(_ledger, env, "budgets", "list", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        rows = {(r["scope"], r["origin"]): r for r in json.loads(listed.stdout)}
        owner = rows["owner:ops", "budget"]
        assert (owner["limit_usd"], owner["spent_usd"], owner["remaining_usd"]) == (
            "10", "6", "4")
        assert owner["timezone"] == "Europe/Berlin" and owner["next_reset"] is not None
        assert rows[f"key:{key}", "max_budget_usd"]["spent_usd"] == "6"
        table = await asyncio.to_thread(_ledger, env, "budgets", "list")
        assert "owner:ops" in table.stdout and "max_budget_usd" in table.stdout
        alerts = await asyncio.to_thread(_ledger, env, "budgets", "alerts", "--format", "json")
        assert [(a["scope"], a["threshold"], a["spent_usd"]) for a in json.loads(
            alerts.stdout)] == [("owner:ops", 50, "6")]
        removed = await asyncio.to_thread(_ledger, env, "budgets", "remove", "owner:ops")
        assert removed.returncode == 0, removed.stderr
        await wait_for_rows(settings.database_url,
                            "SELECT count(*) FROM budgets WHERE scope = 'owner:ops'", 0)
    listed = await asyncio.to_thread(_ledger, env, "budgets", "list", "--format", "json")
    assert [r["scope"] for r in json.loads(listed.stdout)] == [f"key:{key}"]
