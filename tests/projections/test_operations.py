"""Operations: ledger status, dlq list/replay and the Prometheus endpoint, as run by operators."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.producer import EventBuilder
from ledger.settings import Settings
from ops.devstack.ports import free_port
from projections.replay import replay_dead_letters
from tests.polling import wait_until
from tests.projections.helpers import (
    emit,
    fetchval,
    running_worker,
    send_raw,
    usage_event,
    wait_for_rows,
)

build = EventBuilder("test")


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "COLUMNS": "200"}


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], env=_env(settings),
                          capture_output=True, text=True, timeout=60, check=False)


async def test_dead_letter_replay_after_the_cause_is_fixed(settings: Settings) -> None:
    key_id = uuid.uuid4()
    early_update = build.update_key(api_key_id=key_id, owner="ops")
    await emit(settings, [early_update])
    assert settings.database_url
    async with running_worker(settings, ("keys",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM dead_letters", 1)
        await emit(settings, [build.create_key(api_key_id=key_id, name="late",
                                               plaintext_key="sk-late")])
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)
    listed = await asyncio.to_thread(_ledger, settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "handler_error" in listed.stdout
    report = await replay_dead_letters(settings.database_url)
    assert (report.replayed, report.failed) == (1, 0)
    assert await fetchval(settings.database_url,
                          "SELECT owner FROM api_keys WHERE id = $1", key_id) == "ops"
    pending = await fetchval(settings.database_url,
                             "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
    assert pending == 0


async def test_replay_of_a_still_unreadable_letter_keeps_it(settings: Settings) -> None:
    event = json.loads(usage_event(uuid.uuid4()).model_dump_json())
    event["schema_version"] = 42
    assert settings.kafka_bootstrap_servers and settings.database_url
    await send_raw(settings.kafka_bootstrap_servers,
                   [(settings.topic_usage, b"k", json.dumps(event).encode())])
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM dead_letters", 1)
    replay = await asyncio.to_thread(_ledger, settings, "dlq", "replay", "--all")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 0, still failing 1" in replay.stdout
    kind = await fetchval(settings.database_url, "SELECT error_kind FROM dead_letters")
    assert kind == "unsupported_schema_version"


async def test_status_and_metrics_of_a_running_worker(settings: Settings, tmp_path: Path) -> None:
    key = uuid.uuid4()
    await emit(settings, [usage_event(key) for _ in range(30)])
    port = free_port()
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "ops", "project", "--metrics-port", str(port)],
        env=_env(settings), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        assert settings.database_url
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 30)

        async def metrics_ready() -> bool:
            try:
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read())
            except OSError:
                return False
            return b'ledger_projector_events_applied_total{projection="usage"} 30.0' in body

        await wait_until(metrics_ready, 30, "metrics")
        status = await asyncio.to_thread(_ledger, settings, "status")
        assert status.returncode == 0, status.stderr
        assert settings.topic_usage in status.stdout
        usage_rows = [line for line in status.stdout.splitlines()
                      if "usage" in line and settings.topic_usage in line]
        assert len(usage_rows) == 4  # one per partition
        assert sum(int(line.split("│")[4]) for line in usage_rows) == 30  # checkpoints
        assert all(line.split("│")[6].strip() == "0" for line in usage_rows)  # no lag
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 60) == 0
        log.close()


async def test_sigterm_stops_a_worker_whose_database_never_answered(
    settings: Settings, tmp_path: Path
) -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    # Both names: environment() writes LEDGER_DATABASE_URL too, and it is read first.
    env = {**_env(settings), "DATABASE_URL": nowhere, "LEDGER_DATABASE_URL": nowhere}
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "ops", "project"], env=env,
                                  stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        async def retrying() -> bool:  # its connection, with back-off
            return b"database unavailable" in (tmp_path / "worker.log").read_bytes()

        await wait_until(retrying, 30, "the worker to report the database unavailable")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert b"database unavailable" in (tmp_path / "worker.log").read_bytes()


async def test_a_letter_whose_apply_raises_stays_with_the_new_error(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A projection whose apply raises (a bug, not an outage) during a replay: the letter is
    kept with that error, as in a live batch, and the other letters are still replayed."""
    from projections.usage import UsageProjection

    failing = usage_event(uuid.uuid4())
    conn = await asyncpg.connect(pg_dsn)
    try:
        for offset, event in ((1, failing), (2, usage_event(uuid.uuid4()))):
            await conn.execute(
                'INSERT INTO dead_letters (projection, topic, partition, "offset", value, '
                "error_kind, error) VALUES ('usage', 't', 0, $1, $2, 'handler_error', 'old')",
                offset, event.model_dump_json().encode())
    finally:
        await conn.close()
    real_apply = UsageProjection.apply

    async def raises_for_one(self: UsageProjection, conn: Any, batch: Any) -> Any:
        if any(envelope.event.event_id == failing.event_id for envelope in batch):
            raise RuntimeError("boom")
        return await real_apply(self, conn, batch)

    monkeypatch.setattr(UsageProjection, "apply", raises_for_one)
    report = await replay_dead_letters(pg_dsn)
    assert (report.replayed, report.failed) == (1, 1)
    kept = await fetchval(pg_dsn, "SELECT error FROM dead_letters WHERE replayed_at IS NULL")
    assert "RuntimeError: boom" in kept
