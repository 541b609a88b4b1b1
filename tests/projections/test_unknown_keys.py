"""Usage for an api_key_id the keys projection has never seen: recorded, and shown as such.

The key's `api_key.created` travels on another topic and may be projected later (or never,
when a gateway sends ids it made up): the usage still counts, and `ledger status` and
`ledger usage report` say which part of it belongs to no known key.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ledger.producer import EventBuilder
from ledger.settings import Settings
from tests.projections.helpers import emit, running_worker, usage_event, wait_for_rows

build = EventBuilder("test")
OCTOBER = datetime(2026, 10, 15, 12, tzinfo=UTC)


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


async def _run(settings: Settings, *args: str) -> str:
    result = await asyncio.to_thread(_ledger, settings, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_usage_of_a_key_never_created_is_recorded_and_shown_as_unknown(
    settings: Settings,
) -> None:
    known, stranger = uuid.uuid4(), uuid.uuid4()
    await emit(settings, [build.create_key(api_key_id=known, name="team-known",
                                           plaintext_key="sk-known")])
    await emit(settings, [
        *(usage_event(known, when=OCTOBER, cost=Decimal("0.5")) for _ in range(2)),
        *(usage_event(stranger, when=OCTOBER, cost=Decimal("0.0010")) for _ in range(3)),
        usage_event(stranger, model="gpt-4o-mini", when=OCTOBER, cost=None),  # unpriced
    ])
    assert settings.database_url
    async with running_worker(settings):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 6)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)

        status = await _run(settings, "status")
        assert "usage for unknown keys: 4 requests, $0.0030 over 1 key id (1 unpriced)" in status

        table = await _run(settings, "usage", "report", "--month", "2026-10")
        stranger_rows = [line for line in table.splitlines() if str(stranger) in line]
        assert len(stranger_rows) == 1 and "(unknown key)" in stranger_rows[0]
        assert "team-known" in table
        assert "unknown keys: 4 requests, $0.0030 over 1 key id (1 unpriced)" in table

        by_model = await _run(settings, "usage", "report", "--month", "2026-10", "--by", "model")
        assert "unknown keys: 4 requests, $0.0030 over 1 key id (1 unpriced)" in by_model

        as_csv = await _run(settings, "usage", "report", "--month", "2026-10", "--format", "csv")
        names = {row["key"]: row["name"] for row in csv.DictReader(io.StringIO(as_csv))}
        assert names == {str(known): "team-known", str(stranger): "(unknown key)"}

        as_json = json.loads(await _run(settings, "usage", "report", "--month", "2026-10",
                                        "--format", "json"))
        rows = {row["key"]: row for row in as_json["rows"]}
        assert (rows[str(stranger)]["name"], rows[str(stranger)]["unknown_key"]) == (None, True)
        assert (rows[str(known)]["name"], rows[str(known)]["unknown_key"]) == ("team-known",
                                                                               False)
        assert as_json["unknown_keys"] == {"requests": 4, "cost_usd": "0.0030", "key_ids": 1,
                                           "unpriced_requests": 1}

        # The key's own event arrives later, on the keys topic: its usage is no longer unknown.
        await emit(settings, [build.create_key(api_key_id=stranger, name="late-comer",
                                               plaintext_key="sk-late")])
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 2)

    status = await _run(settings, "status")
    assert "usage for unknown keys: 0 requests, $0 over 0 key ids" in status
    table = await _run(settings, "usage", "report", "--month", "2026-10")
    assert "(unknown key)" not in table and "late-comer" in table
    assert "unknown keys" not in table  # no total line when every key is known
    # Nothing was lost while the key was unknown: every request is still counted once.
    as_json = json.loads(await _run(settings, "usage", "report", "--month", "2026-10",
                                    "--format", "json"))
    assert sum(row["requests"] for row in as_json["rows"]) == 6
    assert as_json["unknown_keys"]["requests"] == 0
