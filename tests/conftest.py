"""Session fixtures: real PostgreSQL and broker, a migrated database per test, unique topics."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from ops.migrate import Migrator
from tests.servers import Servers, docker_requested, docker_servers, embedded_servers

TEMPLATE_DB = "ledger_template"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``servers`` every test that needs the session's PostgreSQL and broker.

    A test needs them when its fixture closure (its fixtures and theirs, transitively) holds
    the ``servers`` fixture; tests that start servers themselves carry the marker by hand.
    ``pytest -m "not servers"`` then runs only what needs no server, and ``make fast``
    (``-m "not servers and not slow"``) leaves out child processes too.
    """
    for item in items:
        if "servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.servers)


def _dsn_for(admin_dsn: str, database: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    if docker_requested():
        with docker_servers() as found:
            yield found
        return
    # Not under pytest's basetemp: pytest prunes old basetemps, and a concurrent session
    # would delete this one's data directory under the running server.
    with embedded_servers(Path(tempfile.mkdtemp(prefix="ledger-test-servers-"))) as found:
        yield found


@pytest.fixture(scope="session")
def kafka_bootstrap(servers: Servers) -> str:
    return servers.kafka_bootstrap


@pytest.fixture(scope="session")
async def template_db(servers: Servers) -> str:
    """A database migrated once; each test gets a copy of it (CREATE DATABASE ... TEMPLATE)."""
    admin = await asyncpg.connect(servers.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(_dsn_for(servers.admin_dsn, TEMPLATE_DB))
    try:
        await Migrator(conn).migrate()
    finally:
        await conn.close()
    return TEMPLATE_DB


@asynccontextmanager
async def _scratch_database(servers: Servers, template: str | None) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(servers.admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template
                                                          else ""))
    finally:
        await admin.close()
    try:
        yield _dsn_for(servers.admin_dsn, name)
    finally:
        admin = await asyncpg.connect(servers.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
async def pg_dsn(servers: Servers, template_db: str) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database that only this test uses."""
    async with _scratch_database(servers, template_db) as dsn:
        yield dsn


@pytest.fixture
async def empty_pg_dsn(servers: Servers) -> AsyncIterator[str]:
    """DSN of an empty database (no migrations applied) that only this test uses."""
    async with _scratch_database(servers, None) as dsn:
        yield dsn


@pytest.fixture
async def settings(pg_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at this test's database and at topics no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    configured = Settings(
        database_url=pg_dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_usage=f"usage-{suffix}",
        topic_keys=f"keys-{suffix}",
        topic_catalog=f"catalog-{suffix}",
        topic_alerts=f"alerts-{suffix}",
        topic_usage_partitions=4,
        consumer_group=f"projector-{suffix}",
        # The least Kafka allows: tests that kill a worker wait this long for its partitions.
        consumer_session_timeout=timedelta(seconds=6),
        ledger_home=tmp_path / "ledger-home",
        spool_dir=tmp_path / "spool",
    )
    await ensure_topics(kafka_bootstrap, topic_specs(configured))
    return configured
