"""authorize() when PostgreSQL cannot answer: a stopped server and a query blocked on a lock.

The decision's reason is ``unavailable`` and it says it was not checked; AUTHORIZE_ON_DB_ERROR
decides whether it allows. A key already in the cache is answered from it, without the database.
The ``asyncio.wait_for`` guards only turn a hang (the defect) into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ops.devstack import EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator
from readmodels import (
    DatabaseUnavailableError,
    InvalidArgumentError,
    ReadModels,
    Reason,
    register_metrics,
)
from tests.readmodels.conftest import Writer, make_settings

HANG_GUARD_S = 30  # far above every timeout used here: only a hang reaches it

SHORT = {"db_command_timeout": "300ms", "db_acquire_timeout": "300ms"}


@pytest.fixture
async def throwaway_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test alone, so stopping it disturbs no other test."""
    server = EmbeddedPostgres(tmp_path / "pgdata", free_port())
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop, "immediate")


@pytest.mark.servers  # starts its own
async def test_a_stopped_server_answers_unavailable_denied_or_allowed_by_setting(
    throwaway_postgres: EmbeddedPostgres,
) -> None:
    dsn = throwaway_postgres.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await Migrator(conn).migrate()
        plaintext, _, _ = await Writer(conn).add_key()
    finally:
        await conn.close()
    async with (ReadModels.open(make_settings(dsn, **SHORT)) as deny,
                ReadModels.open(make_settings(dsn, authorize_on_db_error="allow",
                                              **SHORT)) as allow):
        await asyncio.to_thread(throwaway_postgres.stop, "immediate")
        for rm, allowed in ((deny, False), (allow, True)):
            decision = await asyncio.wait_for(rm.keys.authorize(plaintext, "m"), HANG_GUARD_S)
            assert decision.reason is Reason.UNAVAILABLE
            assert decision.allowed is allowed
            assert decision.checked is False and decision.key is None
            assert decision.detail is not None and "database unavailable" in decision.detail
            assert rm.stats().authorize_unavailable == 1
        # Lookups other than authorize still raise, so callers can tell "no" from "not known".
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(deny.keys.get_by_hash("0" * 64), HANG_GUARD_S)


async def test_a_blocked_query_gives_up_after_the_command_timeout(
    pg_dsn: str, writer: Writer
) -> None:
    cached, _, _ = await writer.add_key()
    uncached, _, _ = await writer.add_key()
    async with ReadModels.open(make_settings(pg_dsn, **SHORT)) as rm:
        assert (await rm.keys.authorize(cached, "m")).reason is Reason.OK  # now cached
        queries = rm.keys.queries
        blocker = await asyncpg.connect(pg_dsn)
        try:
            async with blocker.transaction():
                # Every read of api_keys now waits for this transaction.
                await blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                decision = await asyncio.wait_for(rm.keys.authorize(uncached, "m"),
                                                  HANG_GUARD_S)
                assert (decision.allowed, decision.reason, decision.checked) == (
                    False, Reason.UNAVAILABLE, False)
                assert decision.detail is not None and "DB_COMMAND_TIMEOUT" in decision.detail

                hit = await asyncio.wait_for(rm.keys.authorize(cached, "m"), HANG_GUARD_S)
                assert (hit.allowed, hit.reason, hit.checked) == (True, Reason.OK, True)
                assert rm.keys.queries == queries + 1  # only the uncached key went to PostgreSQL

                with pytest.raises(DatabaseUnavailableError, match="DB_COMMAND_TIMEOUT"):
                    await asyncio.wait_for(rm.keys.list(), HANG_GUARD_S)
        finally:
            await blocker.close()
        # The lock is gone: the same key is checked normally (the failure was not cached).
        again = await asyncio.wait_for(rm.keys.authorize(uncached, "m"), HANG_GUARD_S)
        assert again.reason is Reason.OK and again.checked
        assert rm.stats().authorize_unavailable == 1
        registry = CollectorRegistry()
        register_metrics(rm, registry, instance="gw")
        assert ('readmodels_authorize_unavailable_total{instance="gw"} 1.0'
                in generate_latest(registry).decode())


async def test_a_cached_key_whose_budget_cannot_be_checked_is_unavailable_with_its_key(
    pg_dsn: str, writer: Writer
) -> None:
    plaintext, key_id, _ = await writer.add_key(max_budget_usd=Decimal("10"))
    # spend_ttl=0: month-to-date spend is read from PostgreSQL at every authorize.
    async with ReadModels.open(make_settings(pg_dsn, authorize_on_db_error="allow", **SHORT),
                               spend_ttl=0) as rm:
        assert (await rm.keys.authorize(plaintext, "m")).reason is Reason.OK
        blocker = await asyncpg.connect(pg_dsn)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    "LOCK TABLE monthly_usage_summaries IN ACCESS EXCLUSIVE MODE")
                decision = await asyncio.wait_for(rm.keys.authorize(plaintext, "m"),
                                                  HANG_GUARD_S)
        finally:
            await blocker.close()
    assert (decision.allowed, decision.reason, decision.checked) == (
        True, Reason.UNAVAILABLE, False)
    assert decision.key is not None and decision.key.id == key_id  # the key itself was known


async def test_a_dsn_that_is_not_a_postgresql_url_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="DATABASE_URL"):
        await ReadModels.open("garbage")


# Options asyncpg refuses before it tries to connect (its ClientConfigurationError, which it
# derives from InterfaceError, or the OSError of a file it reads then): the server is up, the
# configuration can never work.
REFUSED_OPTIONS = [("sslmode=bogus", "sslmode"), ("sslnegotiation=bogus", "sslnegotiation"),
                   ("ssl_min_protocol_version=SSLv3", "TLS version"),
                   ("sslmode=verify-full&sslrootcert=/nonexistent/root.crt", "sslrootcert")]


@pytest.mark.parametrize(("option", "named"), REFUSED_OPTIONS)
async def test_a_connection_option_the_driver_refuses_is_an_invalid_argument_not_unavailable(
    pg_dsn: str, option: str, named: str
) -> None:
    """Not ``DatabaseUnavailableError``: an operator would retry a wrong setting forever."""
    for target in (f"{pg_dsn}?{option}", make_settings(f"{pg_dsn}?{option}")):
        with pytest.raises(InvalidArgumentError, match=named) as raised:
            await asyncio.wait_for(ReadModels.open(target), HANG_GUARD_S)
        assert not isinstance(raised.value, DatabaseUnavailableError)
        assert raised.value.retriable is False


async def test_authorize_raises_a_refused_option_instead_of_answering_unavailable(
    pg_dsn: str, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pooled connection refused by the driver's own settings check (here PGSSLMODE,
    which asyncpg reads at every connect) is the configuration, not the server: authorize
    raises it as it raises a QueryError, instead of answering ``unavailable``."""
    plaintext, _, _ = await writer.add_key()
    async with ReadModels.open(make_settings(pg_dsn, db_max_idle_conns=0, **SHORT)) as rm:
        monkeypatch.setenv("PGSSLMODE", "bogus")
        await rm._database().pool.expire_connections()  # the next query connects anew
        with pytest.raises(InvalidArgumentError, match="sslmode"):
            await asyncio.wait_for(rm.keys.authorize(plaintext, "gpt-4o"), HANG_GUARD_S)
        assert rm.stats().authorize_unavailable == 0


def _postgres_processes(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, checkpointer...)."""
    found = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == postmaster:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.servers  # starts its own
async def test_a_frozen_server_is_given_up_on_and_leaves_no_unretrieved_errors(
    throwaway_postgres: EmbeddedPostgres,
) -> None:
    """The server accepts TCP but answers nothing, not even the cancel request (SIGSTOP)."""
    dsn = throwaway_postgres.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await Migrator(conn).migrate()
        plaintext, _, _ = await Writer(conn).add_key()
    finally:
        await conn.close()
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    postmaster = throwaway_postgres.pid()
    assert postmaster is not None
    try:
        async with ReadModels.open(make_settings(dsn, **SHORT)) as rm:
            frozen = _postgres_processes(postmaster)  # now with the pool's backends
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            try:
                decision = await asyncio.wait_for(rm.keys.authorize(plaintext, "m"),
                                                  HANG_GUARD_S)
                assert decision.reason is Reason.UNAVAILABLE and not decision.checked
                # The connection is given back in the background (asyncpg allows it
                # DB_ACQUIRE_TIMEOUT); let that finish, then collect what it left behind.
                await asyncio.sleep(1.0)
                gc.collect()
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
    finally:
        loop.set_exception_handler(previous)
    assert not [m for m in reported if "never retrieved" in m], reported


async def test_a_server_out_of_connections_is_unavailable_not_a_query_error(
    pg_dsn: str, writer: Writer
) -> None:
    """"Too many connections" (SQLSTATE 53300) is the server away for new work, as a refused
    connection is: open says DatabaseUnavailableError and authorize answers ``unavailable``,
    never a QueryError (the projector already retries it as an outage)."""
    plaintext, _, _ = await writer.add_key()
    role = f"limited_{os.getpid()}"  # not a superuser: superusers pass any connection limit
    await writer.conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    await writer.conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    limited = pg_dsn.replace("://postgres@", f"://{role}@", 1)
    assert limited != pg_dsn
    try:
        with pytest.raises(DatabaseUnavailableError, match="too many connections"):
            await asyncio.wait_for(ReadModels.open(make_settings(limited)), HANG_GUARD_S)
        # Opened while connections were free, then out of them: the next query needs a new
        # connection, and the server refuses it.
        await writer.conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
        rm = await ReadModels.open(make_settings(limited, db_max_idle_conns=0, **SHORT))
        try:
            await writer.conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
            await rm._database().pool.expire_connections()  # the next query connects anew
            decision = await asyncio.wait_for(rm.keys.authorize(plaintext, "gpt-4o"),
                                              HANG_GUARD_S)
            assert decision.reason is Reason.UNAVAILABLE
            assert "too many connections" in (decision.detail or "")
        finally:
            await rm.close()
    finally:
        await writer.conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await writer.conn.execute(f"DROP ROLE {role}")
