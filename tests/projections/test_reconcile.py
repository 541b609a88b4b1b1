"""Reconcile and repair: summaries checked against usage_records, damaged rows recomputed."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.events import UsageRecorded
from ledger.invalidation import CHANNEL, Invalidation, decode, merge
from ledger.settings import Settings
from ops.devstack.ports import free_port
from projections.base import Envelope, lock_key
from projections.reconcile import (
    COMPARED_COLUMNS,
    ROW,
    Difference,
    Scope,
    compare,
    repair,
)
from projections.usage import UsageProjection
from tests.polling import wait_until
from tests.projections.helpers import (
    emit,
    ground_truth,
    project_usage,
    random_usage,
    running_worker,
    summaries,
    usage_event,
    wait_for_rows,
)

COUNT = "SELECT count(*) FROM usage_records"
OCTOBER = date(2026, 10, 1)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


def _rich_event(key_id: uuid.UUID, when: datetime, *, model: str = "gpt-4o",
                cost: Decimal | None = Decimal("0.25"), status: str = "success") -> UsageRecorded:
    """Every counter non-zero, so a wrong sum of any of them shows."""
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=when, source="test", request_id="r", provider="openai",
        api_key_id=key_id, model=model, prompt_tokens=100, completion_tokens=20,
        cache_read_input_tokens=3, cache_creation_input_tokens=4, reasoning_tokens=5,
        audio_input_tokens=6, audio_output_tokens=7, images=1, output_images=2,
        input_seconds=Decimal("1.5"), output_seconds=Decimal("0.25"), characters=9,
        status=status,  # type: ignore[arg-type]
        cost_usd=cost)


async def test_every_summary_column_is_compared(conn: asyncpg.Connection) -> None:
    columns = {r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'monthly_usage_summaries'")}
    not_sums = {"api_key_id", "model", "month", "provider", "updated_at"}
    assert set(COMPARED_COLUMNS) == columns - not_sums


async def test_clean_projection_has_no_differences_across_month_edges(
    conn: asyncpg.Connection,
) -> None:
    key = uuid.uuid4()
    plus_two = timezone(timedelta(hours=2))
    edges = [
        datetime(2026, 9, 30, 23, 59, 59, 999999, tzinfo=UTC),  # September
        datetime(2026, 10, 1, 0, 0, tzinfo=UTC),  # October
        datetime(2026, 10, 1, 1, 0, tzinfo=plus_two),  # 23:00 UTC: still September
        datetime(2026, 10, 31, 23, 0, tzinfo=UTC),
    ]
    await project_usage(conn, [_rich_event(key, when) for when in edges]
                   + [_rich_event(key, edges[1], cost=None, status="error")])  # unpriced
    assert await compare(conn) == []
    assert await compare(conn, Scope(month=date(2026, 9, 15))) == []
    september = await conn.fetchval(
        "SELECT requests FROM monthly_usage_summaries WHERE month = '2026-09-01'")
    assert september == 2


async def test_each_damaged_column_and_one_sided_row_is_reported_then_repaired(
    conn: asyncpg.Connection,
) -> None:
    damaged, deleted, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    october = datetime(2026, 10, 5, tzinfo=UTC)
    events = [_rich_event(k, october + timedelta(hours=n), cost=None if n == 2 else
                          Decimal("0.25"), status="error" if n == 1 else "success")
              for k in (damaged, deleted, other) for n in range(4)]
    events += [_rich_event(other, datetime(2026, 9, 9, tzinfo=UTC))]
    await project_usage(conn, events)
    before = await _summary_rows(conn)
    changes = ", ".join(
        f"{c} = {c} - interval '1 second'" if c.endswith("_at") else f"{c} = {c} + 1"
        for c in COMPARED_COLUMNS)
    await conn.execute(f"UPDATE monthly_usage_summaries SET {changes} WHERE api_key_id = $1",
                       damaged)
    await conn.execute("DELETE FROM monthly_usage_summaries WHERE api_key_id = $1", deleted)
    phantom = uuid.uuid4()  # a summary no record backs
    await conn.execute(
        "INSERT INTO monthly_usage_summaries (api_key_id, model, month, requests, "
        "first_occurred_at, last_occurred_at) VALUES ($1, 'gpt-4o', $2, 7, now(), now())",
        phantom, OCTOBER)

    found = await compare(conn)
    assert {(d.api_key_id, d.column) for d in found} == (
        {(damaged, c) for c in COMPARED_COLUMNS} | {(deleted, ROW), (phantom, ROW)})
    by_column = {d.column: d for d in found if d.api_key_id == damaged}
    assert by_column["cost_usd"].summary - by_column["cost_usd"].records == 1
    assert by_column["input_seconds"].records == Decimal("6.0")
    assert by_column["unpriced_requests"].records == 1
    assert (by_column["first_occurred_at"].records - by_column["first_occurred_at"].summary
            == timedelta(seconds=1))
    assert Difference(deleted, "gpt-4o", OCTOBER, ROW, None, 4) in found
    assert Difference(phantom, "gpt-4o", OCTOBER, ROW, 7, None) in found
    # Scopes: one key, one month.
    assert {d.api_key_id for d in await compare(conn, Scope(key_id=deleted))} == {deleted}
    assert await compare(conn, Scope(month=date(2026, 9, 1))) == []
    assert await compare(conn, Scope(month=OCTOBER, key_id=other)) == []

    repaired = await repair(conn, Scope(key_id=damaged))  # a scope limits the repair too
    assert {d.api_key_id for d in repaired} == {damaged}
    assert {d.api_key_id for d in await compare(conn)} == {deleted, phantom}
    assert {d.group for d in await repair(conn)} == {
        (deleted, "gpt-4o", OCTOBER), (phantom, "gpt-4o", OCTOBER)}
    assert await compare(conn) == []
    assert await _summary_rows(conn) == before  # the phantom row is gone, the deleted back
    assert await repair(conn) == []


async def _summary_rows(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT * FROM monthly_usage_summaries ORDER BY api_key_id, month, model")
    return [tuple(v for k, v in r.items() if k != "updated_at") for r in rows]


async def test_repair_waits_for_a_batch_in_flight_and_keeps_its_events(
    pg_dsn: str, conn: asyncpg.Connection,
) -> None:
    key = uuid.uuid4()
    when = datetime(2026, 10, 10, tzinfo=UTC)
    settled = [usage_event(key, when=when + timedelta(minutes=n)) for n in range(5)]
    in_flight = [usage_event(key, when=when + timedelta(hours=1))]
    await project_usage(conn, settled)
    await conn.execute("UPDATE monthly_usage_summaries SET cost_usd = cost_usd + 1")
    notified: list[Invalidation] = []
    listener = await asyncpg.connect(pg_dsn)
    await listener.add_listener(CHANNEL, lambda *args: notified.append(decode(args[3])))
    batch = await asyncpg.connect(pg_dsn)
    repairer = await asyncpg.connect(pg_dsn)
    try:
        # A worker's batch, stopped half-way: shared lock held, records and summary written.
        projection = UsageProjection()
        envelopes = [Envelope("usage", 0, 99, None, e) for e in in_flight]
        await projection.prepare(batch, envelopes)
        transaction = batch.transaction()
        await transaction.start()
        await batch.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", lock_key("usage"))
        await projection.apply(batch, envelopes)
        repairing = asyncio.create_task(repair(repairer))
        pid = repairer.get_server_pid()

        async def repair_is_waiting() -> bool:
            return bool(await conn.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))

        await wait_until(repair_is_waiting, 30, "the repair to wait for the batch")
        await transaction.commit()
        repaired = await asyncio.wait_for(repairing, 30)

        async def notification_arrived() -> bool:
            return bool(notified)

        await wait_until(notification_arrived, 10, "the spend notification")
    finally:
        for connection in (listener, batch, repairer):
            await connection.close()
    assert [d.column for d in repaired] == ["cost_usd"]
    assert await compare(conn) == []
    assert await summaries(pg_dsn) == ground_truth(settled + in_flight)
    assert merge(notified) == Invalidation(spend_key_ids=frozenset({str(key)}))


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


def _november_usage(rng: random.Random, keys: list[uuid.UUID], n: int) -> list[UsageRecorded]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [usage_event(rng.choice(keys), model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
                        when=start + timedelta(seconds=rng.randrange(29 * 86400)),
                        cost=Decimal(rng.randrange(1, 10**6)) / Decimal(10**9))
            for _ in range(n)]


async def _emit_in_chunks(settings: Settings, events: list[UsageRecorded], chunks: int) -> None:
    size = len(events) // chunks + 1
    for start in range(0, len(events), size):
        await emit(settings, events[start:start + size])
        await asyncio.sleep(0.3)


async def test_cli_reports_hand_damage_under_live_traffic_and_repair_fixes_it(
    settings: Settings,
) -> None:
    rng = random.Random(17)
    keys = [uuid.uuid4() for _ in range(6)]
    early = random_usage(rng, keys, 3000)  # September to November
    live = _november_usage(rng, keys, 6000)  # only November: September stays still
    truth = ground_truth(early)
    deleted = next(g for g in sorted(truth) if g[2] == "2026-09-01")
    live_groups = {(str(e.api_key_id), e.model, "2026-11-01") for e in live}
    costly = next(g for g in sorted(truth)  # another key's group that keeps getting traffic
                  if g in live_groups and g[0] != deleted[0])
    dsn = settings.database_url
    assert dsn
    async with running_worker(settings, ("usage",)):
        await emit(settings, early)
        await wait_for_rows(dsn, COUNT, len(early))
        sender = asyncio.create_task(_emit_in_chunks(settings, live, chunks=25))
        damage = await asyncpg.connect(dsn)
        try:
            await damage.execute(
                "UPDATE monthly_usage_summaries SET cost_usd = cost_usd + 1 "
                "WHERE api_key_id = $1 AND model = $2 AND month = $3",
                uuid.UUID(costly[0]), costly[1], date.fromisoformat(costly[2]))
            await damage.execute(
                "DELETE FROM monthly_usage_summaries "
                "WHERE api_key_id = $1 AND model = $2 AND month = $3",
                uuid.UUID(deleted[0]), deleted[1], date.fromisoformat(deleted[2]))
        finally:
            await damage.close()

        checked = await asyncio.to_thread(_ledger, settings, "reconcile", "--format", "json")
        assert checked.returncode == 1, checked.stderr
        report = json.loads(checked.stdout)
        cost, row = _exactly_the_damage(report["differences"], costly, deleted)
        assert Decimal(cost["summary"]) - Decimal(cost["records"]) == 1
        assert row == {"summary": "absent", "records": f"{truth[deleted].requests} requests"}
        table = await asyncio.to_thread(_ledger, settings, "reconcile")
        assert table.returncode == 1
        assert "2 differences in 2 summaries" in table.stdout

        fixed = await asyncio.to_thread(_ledger, settings, "reconcile", "--repair",
                                        "--format", "json")
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["repaired"] is True
        _exactly_the_damage(json.loads(fixed.stdout)["differences"], costly, deleted)
        again = await asyncio.to_thread(_ledger, settings, "reconcile")
        assert again.returncode == 0, again.stdout
        assert "match usage_records" in again.stdout
        await sender
        await wait_for_rows(dsn, COUNT, len(early) + len(live), timeout=60)
    assert await summaries(dsn) == ground_truth(early + live)
    final = await asyncio.to_thread(_ledger, settings, "reconcile", "--month", "2026-11")
    assert final.returncode == 0, final.stdout


def _exactly_the_damage(
    differences: list[dict[str, str]], costly: tuple[str, str, str],
    deleted: tuple[str, str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Exactly two differences: cost_usd of ``costly`` and the missing row of ``deleted``."""
    where = {(d["api_key_id"], d["model"], d["month"] + "-01", d["column"]): d
             for d in differences}
    assert len(differences) == 2
    assert set(where) == {(*costly, "cost_usd"), (*deleted, ROW)}
    row = where[(*deleted, ROW)]
    return where[(*costly, "cost_usd")], {"summary": row["summary"], "records": row["records"]}


async def test_cli_failures_are_one_line(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"database_url": f"postgresql://nobody@127.0.0.1:{free_port()}/x"})
    failed = await asyncio.to_thread(_ledger, unreachable, "reconcile")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: cannot connect to PostgreSQL at")
    assert "DATABASE_URL" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    bad_month = await asyncio.to_thread(_ledger, settings, "reconcile", "--month", "2026-13")
    assert bad_month.returncode == 1
    assert bad_month.stderr == "error: --month takes YYYY-MM, got '2026-13'\n"
