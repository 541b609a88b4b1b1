"""Migrator: applies ``migrations/NNNN_name.sql`` in order, once each.

1. Take a session advisory lock, so two concurrent runners apply each file once.
2. Read ``schema_migrations`` and refuse if an applied file's checksum changed.
3. Apply each pending file in its own transaction, recording version, name and checksum.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from ops.exceptions import MigrationError

# Any constant works; it only has to be the same for every runner of this schema.
_ADVISORY_LOCK_KEY = 7_261_845_001
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def default_migrations_dir() -> Path:
    """``LEDGER_MIGRATIONS_DIR``, else the ``migrations/`` folder beside the packages."""
    configured = os.environ.get("LEDGER_MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return found


class Migrator:
    """Brings a database to the schema described by the migration files."""

    def __init__(self, conn: asyncpg.Connection, directory: Path | None = None) -> None:
        self._conn = conn
        self._migrations = load_migrations(directory)

    async def applied(self) -> list[AppliedMigration]:
        exists = await self._conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return []
        rows = await self._conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(**dict(row)) for row in rows]

    async def pending(self) -> list[Migration]:
        done = {m.version for m in await self.applied()}
        return [m for m in self._migrations if m.version not in done]

    async def migrate(self) -> list[Migration]:
        """Apply every pending migration; return the ones this call applied."""
        await self._conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await self._conn.execute(_CREATE_TABLE)
            applied = {m.version: m for m in await self.applied()}
            self._refuse_changed(applied)
            newly: list[Migration] = []
            for migration in self._migrations:
                if migration.version in applied:
                    continue
                async with self._conn.transaction():
                    try:
                        await self._conn.execute(migration.sql)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"{migration.version:04d}_{migration.name}.sql failed: {exc}"
                        ) from exc
                    await self._conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                newly.append(migration)
            return newly
        finally:
            await self._conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)

    def _refuse_changed(self, applied: dict[int, AppliedMigration]) -> None:
        for migration in self._migrations:
            done = applied.get(migration.version)
            if done is not None and done.checksum != migration.checksum:
                raise MigrationError(
                    f"{migration.version:04d}_{done.name}.sql was changed after it was applied "
                    f"(checksum {done.checksum[:12]} applied, {migration.checksum[:12]} on disk); "
                    "add a new migration instead of editing an applied one"
                )


async def migrate(dsn: str, directory: Path | None = None) -> list[Migration]:
    conn = await asyncpg.connect(dsn)
    try:
        return await Migrator(conn, directory).migrate()
    finally:
        await conn.close()
