"""The invalidation listener: one dedicated connection doing ``LISTEN ledger_invalidate``.

Projectors ``NOTIFY`` inside the transaction that changed the rows, so a notification arrives
only after the change is visible to every other connection. The listener decodes each payload
with :func:`ledger.invalidation.decode` and hands it to ``on_change`` synchronously, inside the
asyncpg callback, so the eviction happens before any other task runs.

Notifications sent while the connection is down are lost for good, so a lost connection means
"anything may be stale": ``on_lost`` runs at once (the caller clears every cache and stops
storing), and once LISTEN is active again ``on_listening`` runs (clear again, since changes may
have committed between the first clear and the new LISTEN, then store again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import asyncpg

from ledger.invalidation import CHANNEL, Invalidation, decode
from readmodels.exceptions import DatabaseUnavailableError, translate_errors

log = logging.getLogger(__name__)

# A half-open TCP connection never reports itself; a cheap query at this interval finds it.
DEFAULT_PING_INTERVAL = 5.0
_BACKOFF_START = 0.05
_BACKOFF_MAX = 5.0


class Listener:
    """Keeps ``LISTEN`` running on its own connection, reconnecting with back-off."""

    def __init__(
        self,
        dsn: str,
        on_change: Callable[[Invalidation], None],
        on_lost: Callable[[], None],
        on_listening: Callable[[], None],
        *,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        connect_timeout: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        self._on_lost = on_lost
        self._on_listening = on_listening
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost: asyncio.Event | None = None
        self._closing = False
        self.listening = False
        self.reconnects = 0  # successful LISTENs after a loss
        self.connection_losses = 0
        self.notifications = 0
        self.backend_pid: int | None = None  # of the listening connection, for operators/tests

    async def start(self) -> None:
        """LISTEN once (raising if the database cannot be reached), then keep it up."""
        with translate_errors("listen for invalidations"):
            await self._connect()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name="readmodels-listener"
        )

    async def close(self) -> None:
        self._closing = True
        if self._lost is not None:
            self._lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        lost = asyncio.Event()
        self._conn, self._lost = conn, lost
        conn.add_termination_listener(lambda _conn: self._connection_lost(lost))
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self.backend_pid = conn.get_server_pid()
        self.listening = True
        self._on_listening()

    def _connection_lost(self, lost: asyncio.Event) -> None:
        # Called by asyncpg when the connection closes for any reason, including
        # pg_terminate_backend and a server restart. Clearing here, not in the supervising
        # task, leaves no window in which a cache could answer from unwatched data.
        if lost.is_set():
            return
        lost.set()
        if self.listening:
            self.listening = False
            self.connection_losses += 1
            self._on_lost()

    def _notified(
        self, _conn: object, _pid: int, _channel: str, payload: object
    ) -> None:
        self.notifications += 1
        try:
            change = decode(str(payload))
        except Exception:  # decode is meant to be total; be safe if it is not
            log.exception("undecodable invalidation payload; flushing every cache")
            change = Invalidation(flush_all=True)
        try:
            self._on_change(change)
        except Exception:
            # An eviction that failed half-way leaves unknown entries stale: drop everything.
            log.exception("applying an invalidation failed; flushing every cache")
            self._on_change(Invalidation(flush_all=True))

    async def _supervise(self) -> None:
        backoff = _BACKOFF_START
        while not self._closing:
            lost = self._lost
            if lost is not None and self._conn is not None:
                await self._watch(self._conn, lost)
                backoff = _BACKOFF_START
            if self._closing:
                return
            await self._disconnect()
            delay = backoff * (0.5 + random.random())  # jitter: many gateways, one database
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            try:
                await self._connect()
            except (DatabaseUnavailableError, OSError, TimeoutError,
                    asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("invalidation listener cannot reconnect (retrying): %s", exc)
                continue
            self.reconnects += 1
            log.info("invalidation listener reconnected after %d loss(es)",
                     self.connection_losses)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is lost (or failed a liveness ping)."""
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self._ping_interval)
            except TimeoutError:
                try:
                    await conn.execute("SELECT 1", timeout=self._ping_interval)
                except (OSError, TimeoutError, asyncpg.PostgresError,
                        asyncpg.InterfaceError) as exc:
                    log.warning("invalidation listener connection failed a ping: %s",
                                str(exc) or type(exc).__name__)
                    self._connection_lost(lost)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not conn.is_closed():
            # terminate, not close: the connection may be half-open and close() would wait.
            conn.terminate()
        if self._lost is not None:
            self._connection_lost(self._lost)
