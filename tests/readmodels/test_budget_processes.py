"""Budgets across gateway processes, with the real projector: 4 processes x 32 concurrent
requests never pass a small cap and strand nothing; a killed process's holds come back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from ledger import budgets
from ledger.producer import EventBuilder
from ledger.settings import Settings
from readmodels import ReadModels, Reason
from tests.projections.helpers import emit, running_worker, wait_for_rows, wait_until
from tests.readmodels.budget_gateway import MAX_ESTIMATE

build = EventBuilder("test")
CAP = Decimal("3.00")
PROCESSES, CONCURRENCY = 4, 32


def _gateway(settings: Settings, log: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, **settings.environment())
    with log.open("a") as err:
        return subprocess.Popen([sys.executable, "-m", "tests.readmodels.budget_gateway", *args],
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                stdin=subprocess.DEVNULL)


async def _scalar(dsn: str, sql: str, *args: object) -> Decimal:
    conn = await asyncpg.connect(dsn)
    try:
        value: Decimal = await conn.fetchval(sql, *args)
        return value
    finally:
        await conn.close()


async def _setup(settings: Settings, scope_owner: str, limit: Decimal) -> tuple[str, uuid.UUID]:
    assert settings.database_url
    key = uuid.uuid4()
    plaintext = f"sk-budget-{key.hex}"
    await emit(settings, [
        build.create_key(api_key_id=key, name="k", plaintext_key=plaintext, owner=scope_owner),
        build.set_budget(scope=f"owner:{scope_owner}", limit_usd=limit, period="day",
                         timezone="Europe/Paris"),
    ])
    await wait_for_rows(settings.database_url, "SELECT count(*) FROM budgets", 1)
    return plaintext, key


async def test_four_processes_never_pass_the_cap_and_strand_nothing(
    settings: Settings, tmp_path: Path,
) -> None:
    assert settings.database_url
    scope = "owner:shared"
    spent_sql = ("SELECT coalesce(sum(spent), 0) FROM budget_spend WHERE scope = $1 "
                 "AND period_start = $2")
    start = budgets.period_start(datetime.now(UTC), "day", "Europe/Paris")
    async with running_worker(settings, ("keys", "usage")):
        plaintext, _ = await _setup(settings, "shared", CAP)
        # Each process has its own spool, as each gateway host does.
        gateways = [_gateway(settings.model_copy(update={"spool_dir": tmp_path / f"spool{seed}"}),
                             tmp_path / "gateways.log", "spend", plaintext, str(CONCURRENCY),
                             str(seed)) for seed in range(PROCESSES)]
        outputs = await asyncio.gather(*(asyncio.to_thread(g.communicate, timeout=120)
                                         for g in gateways))
        assert all(g.returncode == 0 for g in gateways), (tmp_path / "gateways.log").read_text()
        results = [json.loads(out) for out, _ in outputs]
        allowed = sum(int(r["allowed"]) for r in results)
        actual = sum((Decimal(r["actual"]) for r in results), Decimal(0))
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records",
                            allowed)
        spent = await _scalar(settings.database_url, spent_sql, scope, start)
        open_holds = await _scalar(
            settings.database_url,
            "SELECT coalesce(sum(greatest(amount - settled - returned, 0)), 0) "
            "FROM budget_leases WHERE scope = $1 AND expires_at > now()", scope)
    assert spent == actual  # every usage counted once
    assert spent <= CAP  # no overspend: actual costs were at most their estimates
    assert open_holds == 0  # every hold settled, every unused lease given back
    assert spent >= CAP - MAX_ESTIMATE, f"{CAP - spent} USD of budget stranded"
    assert all(int(r["refused"]) >= CONCURRENCY for r in results)  # the cap was really hit


async def test_a_killed_gateway_strands_its_holds_only_until_they_expire(
    settings: Settings, tmp_path: Path,
) -> None:
    assert settings.database_url
    short = settings.model_copy(update={"budget_hold_ttl": timedelta(seconds=1.5)})
    async with running_worker(settings, ("keys", "usage")):
        plaintext, _ = await _setup(settings, "crashy", Decimal("1.00"))
        gateway = _gateway(short, tmp_path / "hold.log", "hold", plaintext, "0.9")
        try:
            assert gateway.stdout is not None
            line = await asyncio.to_thread(gateway.stdout.readline)
            assert line.strip() == "held", (tmp_path / "hold.log").read_text()
        finally:
            gateway.send_signal(signal.SIGKILL)
            await asyncio.to_thread(gateway.wait)
        async with ReadModels.open(short) as rm:
            refused = await rm.keys.authorize(plaintext, "m", estimate_usd=Decimal("0.5"))
            assert refused.reason is Reason.OVER_BUDGET  # the dead process's hold still counts

            async def back() -> bool:
                decision = await rm.keys.authorize(plaintext, "m", estimate_usd=Decimal("1"))
                return decision.allowed

            # Leases live 2 x BUDGET_HOLD_TTL; then the whole budget is there again.
            await wait_until(back, 10, "the killed gateway's hold to expire")
        spent = await _scalar(settings.database_url,
                              "SELECT coalesce(sum(spent), 0) FROM budget_spend")
    assert spent == 0  # nothing was counted for the hold that never became usage
