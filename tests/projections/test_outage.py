"""Which driver errors the worker retries as "the database is away": real errors from asyncpg.

A retried error that can never succeed stalls a projection forever, so the configuration
errors asyncpg raises before it connects must not be outages, although asyncpg derives them
from ``InterfaceError``, which the rule lists for a connection closed underneath us.
"""

from __future__ import annotations

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
