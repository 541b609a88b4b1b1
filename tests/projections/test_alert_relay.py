"""The budget alert relay reads a connection failure as the projector's runners do.

One rule (``ledger.db.server_away``) says "the server is away, wait for it" or "the settings
are wrong, stop": the relay retries the first and raises the second, so ``ledger project``
exits with one line instead of the relay retrying a database name that will never exist.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ledger.db import DatabaseSettingsError
from ledger.settings import Settings
from ops.devstack.ports import free_port
from projections.alerts import AlertRelay

HANG_GUARD_S = 15  # the relay retries every 2s: a relay that retries is still running then
STILL_RETRYING_S = 5


def _relay(dsn: str, bootstrap_servers: str) -> AlertRelay:
    return AlertRelay(Settings(database_url=dsn), dsn=dsn, bootstrap_servers=bootstrap_servers)


async def test_an_unknown_database_stops_the_relay(pg_dsn: str, kafka_bootstrap: str) -> None:
    """The server is up and answers; the database named in the DSN does not exist."""
    base, _, _ = pg_dsn.rpartition("/")
    relay = _relay(f"{base}/no_such_database", kafka_bootstrap)
    with pytest.raises(DatabaseSettingsError, match="no_such_database"):
        await asyncio.wait_for(relay.run(asyncio.Event()), HANG_GUARD_S)


async def test_an_unreachable_database_is_waited_for(kafka_bootstrap: str) -> None:
    """The guard on the other side: nothing listens on the port, the relay keeps retrying
    until it is told to stop, and then returns without an error."""
    relay = _relay(f"postgresql://postgres@127.0.0.1:{free_port()}/x", kafka_bootstrap)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        done, _ = await asyncio.wait({running}, timeout=STILL_RETRYING_S)
        assert not done, running.exception()
        stop.set()
        await asyncio.wait_for(running, HANG_GUARD_S)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
