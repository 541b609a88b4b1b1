from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from ops.exceptions import MigrationError
from ops.migrate import Migrator, default_migrations_dir, load_migrations

EXPECTED_TABLES = {
    "providers", "models", "model_aliases", "model_price_history", "api_keys", "key_metadata",
    "usage_records", "monthly_usage_summaries", "projection_checkpoints", "dead_letters",
    "schema_migrations", "usage_event_ids", "usage_repricings",
}


async def test_apply_creates_the_schema_and_records_each_file(empty_pg_dsn: str) -> None:
    conn = await asyncpg.connect(empty_pg_dsn)
    try:
        applied = await Migrator(conn).migrate()
        assert [m.version for m in applied] == [m.version for m in load_migrations()]
        tables = {r["relname"] for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') "
            "AND relnamespace = 'public'::regnamespace")}
        assert tables >= EXPECTED_TABLES
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'usage_records'")
        assert kind == "p"  # declaratively partitioned
        money_types = {r["data_type"] for r in await conn.fetch(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = 'public' "
            "AND (column_name LIKE '%cost%' OR column_name LIKE '%budget%') "
            "AND column_name NOT LIKE '%cost_source'")}  # where a cost came from
        assert money_types == {"numeric"}
        recorded = await Migrator(conn).applied()
        assert [(m.version, m.checksum) for m in recorded] == [
            (m.version, m.checksum) for m in load_migrations()]
    finally:
        await conn.close()


async def test_reapply_is_a_no_op(empty_pg_dsn: str) -> None:
    conn = await asyncpg.connect(empty_pg_dsn)
    try:
        await Migrator(conn).migrate()
        assert await Migrator(conn).migrate() == []
        assert await Migrator(conn).pending() == []
    finally:
        await conn.close()


async def test_changed_applied_file_is_refused(empty_pg_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), directory)
    conn = await asyncpg.connect(empty_pg_dsn)
    try:
        await Migrator(conn, directory).migrate()
        first = sorted(directory.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited after release\n")
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await Migrator(conn, directory).migrate()
    finally:
        await conn.close()


async def test_failing_migration_rolls_back_and_names_the_file(
    empty_pg_dsn: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), directory)
    (directory / "9999_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n")
    conn = await asyncpg.connect(empty_pg_dsn)
    try:
        with pytest.raises(MigrationError, match=r"9999_broken\.sql"):
            await Migrator(conn, directory).migrate()
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert 9999 not in {m.version for m in await Migrator(conn, directory).applied()}
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_file_once(empty_pg_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_pg_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(Migrator(c).migrate() for c in conns))
        applied_counts = sorted(len(r) for r in results)
        assert applied_counts == [0, 0, 0, len(load_migrations())]
        rows = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert rows == len(load_migrations())
    finally:
        for c in conns:
            await c.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)
