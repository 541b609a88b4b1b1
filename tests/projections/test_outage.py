"""Which driver errors the worker retries as "the database is away": real errors from asyncpg.

A retried error that can never succeed stalls a projection forever, so the configuration
errors asyncpg raises before it connects must not be outages, although asyncpg derives them
from ``InterfaceError``, which the rule lists for a connection closed underneath us.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from ops.devstack.ports import free_port
from projections.outage import is_outage

CONNECT_TIMEOUT_S = 10


async def _connect_error(dsn: str) -> BaseException:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the error is what is tested
        await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    return raised.value


@pytest.mark.parametrize("option", ["sslmode=bogus", "sslnegotiation=bogus",
                                    "ssl_min_protocol_version=SSLv3",
                                    "target_session_attrs=bogus"])
async def test_a_connection_option_the_driver_refuses_is_not_an_outage(
    pg_dsn: str, option: str
) -> None:
    error = await _connect_error(f"{pg_dsn}?{option}")
    assert isinstance(error, asyncpg.ClientConfigurationError)
    assert not is_outage(error)


# A file the settings name that asyncpg cannot read while it reads its arguments: a plain
# OSError (no ClientConfigurationError), with nothing on it that names the file.
SETTINGS_FILES = ["sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
                  "sslmode=require&sslcert=/nonexistent/client.crt",
                  "sslmode=verify-full&sslrootcert=/"]


@pytest.mark.parametrize("option", SETTINGS_FILES)
async def test_a_file_the_settings_name_that_cannot_be_read_is_not_an_outage(
    pg_dsn: str, option: str
) -> None:
    error = await _connect_error(f"{pg_dsn}?{option}")
    assert isinstance(error, OSError)  # what asyncpg raises: retried as "away" until now
    assert not is_outage(error)


async def test_a_unix_socket_that_is_not_there_is_an_outage(tmp_path: Path) -> None:
    """The same FileNotFoundError(2) as a missing certificate, raised by the connection: the
    server has not created its socket yet (starting) and may any moment."""
    error = await _connect_error(f"postgresql://postgres@/x?host={tmp_path}&port={free_port()}")
    assert isinstance(error, FileNotFoundError)
    assert is_outage(error)


async def test_a_refused_connection_is_an_outage() -> None:
    error = await _connect_error(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert isinstance(error, OSError)
    assert is_outage(error)


async def test_a_connection_closed_underneath_is_an_outage(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    await conn.close()
    with pytest.raises(asyncpg.InterfaceError) as raised:
        await conn.fetchval("SELECT 1")
    assert is_outage(raised.value)


async def test_an_argument_the_driver_cannot_encode_is_not_an_outage(pg_dsn: str) -> None:
    """Retrying the batch would send the same argument again: it is the event's own error.
    (asyncpg reports it as the PostgresError ``DataError``, not its InterfaceError one.)"""
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.DataError) as raised:
            await conn.fetchval("SELECT $1::int", "not a number")
    finally:
        await conn.close()
    assert not is_outage(raised.value)
