"""`ledger demo` at small scale reconciles exactly; `ledger usage report` in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg

from ledger.settings import Settings


def _env(settings: Settings, home: Path) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "LEDGER_HOME": str(home), "COLUMNS": "160"}


def _ledger(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


async def test_demo_at_small_scale_reconciles_exactly(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings, tmp_path / "home")
    result = await asyncio.to_thread(
        _ledger, env, "demo", "--events", "20000", "--keys", "100", "--seed", "7", timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "reconciliation: MATCH" in out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in out.splitlines() if line.count("│") == 5}
    assert rows["requests"] == ["20000", "20000", "20000"]
    assert rows["cost_usd"][0] == rows["cost_usd"][1] == rows["cost_usd"][2]
    assert Decimal(rows["cost_usd"][0]) > 0
    assert "revoked" in out  # authorize() of the keys revoked mid-stream
    assert "dead letters this run: 100" in out
    assert not list((tmp_path / "home").glob("*.pid"))  # it started no servers of its own


async def test_usage_report_in_every_format(settings: Settings, tmp_path: Path) -> None:
    keys = [uuid.uuid4() for _ in range(3)]
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        for index, key in enumerate(keys):
            await conn.execute(
                "INSERT INTO api_keys (id, key_hash, name, created_at, updated_at) "
                "VALUES ($1, $2, $3, now(), now())", key, f"{index:064x}", f"key-{index}")
            for model, provider, cost in (("gpt-4o", "openai", "1.5"),
                                          ("claude-x", "anthropic", "0.25")):
                await conn.execute(
                    "INSERT INTO monthly_usage_summaries (api_key_id, model, month, provider, "
                    "requests, prompt_tokens, completion_tokens, cost_usd, first_occurred_at, "
                    "last_occurred_at) VALUES ($1, $2, '2026-10-01', $3, $4, 100, 10, $5, "
                    "now(), now())", key, model, provider, index + 1,
                    Decimal(cost) * (index + 1))
    finally:
        await conn.close()
    env = _env(settings, tmp_path)
    as_json = await asyncio.to_thread(_ledger, env, "usage", "report", "--month", "2026-10",
                                      "--by", "model", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert [(r["model"], r["requests"], r["cost_usd"]) for r in report["rows"]] == [
        ("gpt-4o", 6, "9.0"), ("claude-x", 6, "1.50")]
    as_csv = await asyncio.to_thread(_ledger, env, "usage", "report", "--month", "2026-10",
                                     "--by", "key", "--top", "2", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["name"], r["cost_usd"]) for r in rows] == [("key-2", "5.25"), ("key-1", "3.50")]
    as_table = await asyncio.to_thread(_ledger, env, "usage", "report", "--month", "2026-10",
                                       "--by", "provider", "--key", str(keys[0]))
    assert as_table.returncode == 0, as_table.stderr
    assert "openai" in as_table.stdout and "1.5" in as_table.stdout
    assert "anthropic" in as_table.stdout and "0.25" in as_table.stdout
    bad = await asyncio.to_thread(_ledger, env, "usage", "report", "--month", "October")
    assert bad.returncode == 1
    assert bad.stderr == "error: --month takes YYYY-MM, got 'October'\n"
