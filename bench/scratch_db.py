"""A migrated PostgreSQL for a benchmark: DATABASE_URL if set, else a throwaway embedded one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from ops.devstack import EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator


@asynccontextmanager
async def migrated_database(prefix: str) -> AsyncIterator[str]:
    """Yield a DSN; an embedded server started here is stopped and its data removed after."""
    dsn = os.environ.get("DATABASE_URL")
    if dsn is not None:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as root:
        pg = EmbeddedPostgres(Path(root) / "pgdata", free_port())
        pg.start()
        try:
            conn = await asyncpg.connect(pg.dsn)
            await Migrator(conn).migrate()
            await conn.close()
            yield pg.dsn
        finally:
            pg.stop("immediate")
