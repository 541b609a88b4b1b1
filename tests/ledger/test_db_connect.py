"""``ledger.db.connect``: a failure says whether trying again can help.

A server that refuses the connection may be back later (retriable); an option in the URL
that asyncpg refuses before it connects (``sslmode=bogus``) never works (not retriable), nor
does a database the server says does not exist. The same rule as the runners' (server_away).
"""

from __future__ import annotations

import pytest

from ledger.db import DatabaseConnectError, DatabaseSettingsError, connect
from ledger.settings import Settings
from ops.devstack.ports import free_port


async def test_an_unreachable_server_is_retriable() -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x"
    with pytest.raises(DatabaseConnectError) as raised:
        await connect(url, Settings(database_url=url))
    assert raised.value.retriable is True
    assert "s3cret" not in str(raised.value)


async def test_an_option_the_driver_refuses_is_not_retriable(pg_dsn: str) -> None:
    base = pg_dsn.replace("://postgres@", "://postgres:s3cret@", 1)
    url = f"{base}?sslmode=bogus"
    with pytest.raises(DatabaseConnectError, match="sslmode") as raised:
        await connect(url, Settings(database_url=url))
    assert raised.value.retriable is False
    assert "s3cret" not in str(raised.value)


async def test_an_unknown_database_is_not_retriable(pg_dsn: str) -> None:
    """The server answers, and says the database named in the URL does not exist."""
    base, _, _ = pg_dsn.rpartition("/")
    url = f"{base}/no_such_database"
    with pytest.raises(DatabaseSettingsError, match="no_such_database") as raised:
        await connect(url, Settings(database_url=url))
    assert raised.value.retriable is False


async def test_a_certificate_file_that_is_not_there_is_not_retriable(pg_dsn: str) -> None:
    """asyncpg reads it before connecting and raises a bare FileNotFoundError."""
    url = f"{pg_dsn}?sslmode=verify-full&sslrootcert=/nonexistent/root.crt"
    with pytest.raises(DatabaseSettingsError, match="sslrootcert") as raised:
        await connect(url, Settings(database_url=url))
    assert raised.value.retriable is False
    assert "No such file" in str(raised.value)
