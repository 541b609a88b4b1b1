"""The ``ReadModels`` facade: one pool, the readers, their caches and the invalidation listener.

``await ReadModels.open(settings_or_dsn)`` or ``async with ReadModels.open(...) as rm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import Any, Final

import asyncpg

from ledger.exceptions import SettingsError
from ledger.invalidation import Invalidation
from ledger.settings import Settings, load_settings
from readmodels.budgets import BudgetReader, Ceiling
from readmodels.cache import Cache, CacheStats
from readmodels.exceptions import (
    ConnectionExpiredError,
    InvalidArgumentError,
    ReadModelError,
    ReadModelsClosedError,
    translate_errors,
)
from readmodels.keys import ApiKey, KeyReader
from readmodels.listener import DEFAULT_PING_INTERVAL, Listener
from readmodels.models import Model, ModelReader
from readmodels.usage import UsageReader

# Month-to-date spend changes with every usage batch and is evicted by notifications; the TTL
# only bounds the damage of a lost notification.
DEFAULT_SPEND_TTL: Final = 5.0
_HEALTH_TIMEOUT: Final = 5.0
_HEALTH = """SELECT (SELECT count(*) FROM (SELECT 1 FROM api_keys LIMIT 1) k)
                  + (SELECT count(*) FROM (SELECT 1 FROM models LIMIT 1) m)
                  + (SELECT count(*) FROM (SELECT 1 FROM monthly_usage_summaries LIMIT 1) s)"""


class Database:
    """The asyncpg pool, with errors translated, calls bounded and connections recycled by age.

    Every call gives up after ``DB_ACQUIRE_TIMEOUT`` waiting for a connection (opening one
    included) and ``DB_COMMAND_TIMEOUT`` per statement (asyncpg then asks the server to cancel
    it), and the whole call, giving the connection back included, after the sum of the two: a
    server that stops answering altogether cannot even take a cancel request, and a gateway
    must still get its answer. The limits are client-side for that reason.

    asyncpg has no maximum connection lifetime, only an idle one. We record each connection's
    birth in ``init`` and, in the pool's ``reset`` hook (run on every release), raise for a
    connection older than the lifetime; asyncpg then terminates that connection and opens a
    new one on a later acquire. The query's result is already in hand at that point, so the
    signal is swallowed here. Age is checked on release: an idle connection is recycled by the
    idle timeout instead.
    """

    def __init__(self, pool: asyncpg.Pool, max_lifetime: float,
                 born: weakref.WeakKeyDictionary[Any, float], settings: Settings) -> None:
        self.pool = pool
        self._max_lifetime = max_lifetime
        self._born = born
        self.recycled = 0
        acquire = settings.db_acquire_timeout.total_seconds()
        command = settings.db_command_timeout.total_seconds()
        self._acquire_timeout = acquire
        self._deadline = acquire + command
        self._timed_out = (f"no answer within {self._deadline:g}s (DB_ACQUIRE_TIMEOUT "
                           f"{acquire:g}s + DB_COMMAND_TIMEOUT {command:g}s)")

    @classmethod
    async def create(cls, dsn: str, settings: Settings) -> Database:
        born: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        lifetime = settings.db_conn_max_lifetime.total_seconds()
        holder: list[Database] = []

        async def init(conn: asyncpg.Connection) -> None:
            born[conn] = time.monotonic()

        async def reset(conn: asyncpg.Connection) -> None:
            # asyncpg has already run the default reset (RESET ALL etc.) before this hook.
            started = born.get(conn)
            if lifetime > 0 and started is not None and time.monotonic() - started > lifetime:
                if holder:
                    holder[0].recycled += 1
                raise ConnectionExpiredError

        with translate_errors("open connection pool"):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(settings.db_max_idle_conns, settings.db_max_open_conns),
                max_size=settings.db_max_open_conns,
                max_inactive_connection_lifetime=settings.db_conn_max_idle_time.total_seconds(),
                init=init,
                reset=reset,
                timeout=settings.db_connect_timeout.total_seconds(),
                command_timeout=settings.db_command_timeout.total_seconds(),
            )
        db = cls(pool, lifetime, born, settings)
        holder.append(db)
        return db

    async def _run(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        with translate_errors(what, self._timed_out):
            conn = await self.pool.acquire(timeout=self._acquire_timeout)
            try:
                async with asyncio.timeout_at(deadline):
                    return await call(conn)
            finally:
                # What is left of the deadline bounds the release too (asyncpg waits there for
                # a cancelled query, then drops the connection). Passed as asyncpg's budget,
                # not enforced by cancelling: a cancelled release leaves asyncpg's inner task
                # behind, and asyncio logs its failure as "never retrieved".
                with contextlib.suppress(ConnectionExpiredError):  # the reset hook's signal
                    await self.pool.release(conn, timeout=max(deadline - loop.time(), 0.001))

    async def run(self, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        """``call(connection)`` on a pooled connection: several statements, a transaction."""
        return await self._run(what, call)

    async def fetch(self, what: str, query: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run(what, lambda c: c.fetch(query, *args))
        return rows

    async def fetch_planned(self, what: str, query: str, *args: object) -> list[asyncpg.Record]:
        """``fetch`` with a plan made for these very arguments (usage queries).

        A prepared statement switches to a generic plan after five executions, and the
        generic plan of a keyset page sorts every row a key has in the range (it assumes an
        average key), while the custom plan for a heavy key reads the index in order and stops
        at LIMIT. The setting is transaction-local so the key and model lookups, which are
        fine with generic plans, keep skipping the planner.
        """

        async def call(conn: Any) -> list[asyncpg.Record]:
            async with conn.transaction(readonly=True):
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows

        rows: list[asyncpg.Record] = await self._run(what, call)
        return rows

    async def fetchrow(self, what: str, query: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run(what, lambda c: c.fetchrow(query, *args))
        return row

    async def fetchval(self, what: str, query: str, *args: object) -> Any:
        return await self._run(what, lambda c: c.fetchval(query, *args))

    async def close(self) -> None:
        # A graceful close waits for connections in use; none is held longer than a call's
        # deadline, and a server that no longer answers gets its connections dropped.
        try:
            async with asyncio.timeout(self._deadline):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    idle: int
    min_size: int
    max_size: int
    recycled: int  # connections closed for exceeding DB_CONN_MAX_LIFETIME


@dataclass(frozen=True, slots=True)
class Stats:
    pool: PoolStats
    caches: MappingProxyType[str, CacheStats]
    listening: bool
    listener_reconnects: int
    listener_losses: int
    notifications: int
    authorize_unavailable: int = 0  # authorize() answers with reason "unavailable"


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    listening: bool
    latency_seconds: float | None
    error: str | None = field(default=None)


def _settings_from(target: Settings | str) -> tuple[Settings, str]:
    try:
        settings = load_settings(database_url=target) if isinstance(target, str) else target
    except SettingsError as exc:  # a DSN that is not a PostgreSQL URL
        raise InvalidArgumentError(str(exc)) from None
    if settings.database_url is None:
        raise ReadModelError("DATABASE_URL is not set; read models need a PostgreSQL URL")
    return settings, settings.database_url


class ReadModels:
    """Cached reads of keys, models and usage for a gateway's hot path."""

    keys: KeyReader
    models: ModelReader
    usage: UsageReader
    budgets: BudgetReader

    def __init__(self, settings: Settings, dsn: str, *, spend_ttl: float,
                 ping_interval: float) -> None:
        self._settings = settings
        self._dsn = dsn
        self._spend_ttl = spend_ttl
        self._ping_interval = ping_interval
        negative_ttl = settings.cache_api_key_negative_ttl.total_seconds()
        self._key_cache: Cache[str, ApiKey] = Cache(
            "api_keys", settings.cache_api_key_size,
            settings.cache_api_key_ttl.total_seconds(), negative_ttl)
        # Unknown model names are cached negatively with the key setting's TTL (there is no
        # model-specific one); a catalog notification naming the model evicts it.
        self._model_cache: Cache[str, Model] = Cache(
            "models", settings.cache_model_size, settings.cache_model_ttl.total_seconds(),
            negative_ttl)
        self._spend_cache: Cache[str, tuple[date, Decimal]] = Cache(
            "spend", settings.cache_api_key_size, spend_ttl)
        # Budget changes flush every cache (they are rare), so "no budget" can live as long.
        key_ttl = settings.cache_api_key_ttl.total_seconds()
        self._budget_cache: Cache[str, Ceiling] = Cache(
            "budgets", settings.cache_api_key_size, key_ttl, key_ttl)
        self._caches = (self._key_cache, self._model_cache, self._spend_cache, self._budget_cache)
        self._db: Database | None = None
        self._listener: Listener | None = None
        self._closed = False

    @classmethod
    def open(cls, settings_or_dsn: Settings | str, *, spend_ttl: float = DEFAULT_SPEND_TTL,
             ping_interval: float = DEFAULT_PING_INTERVAL) -> _Opener:
        """Open the pool and start listening; await it or use it with ``async with``."""
        settings, dsn = _settings_from(settings_or_dsn)
        return _Opener(cls(settings, dsn, spend_ttl=spend_ttl, ping_interval=ping_interval))

    async def _start(self) -> ReadModels:
        self._db = await Database.create(self._dsn, self._settings)
        db = self._db
        self.models = ModelReader(db, self._model_cache)
        self.usage = UsageReader(db, self._spend_cache)
        self.budgets = BudgetReader(db, self._budget_cache,
                                    hold_ttl=self._settings.budget_hold_ttl,
                                    state_ttl=self._spend_ttl,
                                    plan_ttl=self._settings.cache_api_key_ttl.total_seconds())
        self.keys = KeyReader(
            db, self._key_cache, self.models, self.usage, self.budgets,
            allow_when_unavailable=self._settings.authorize_on_db_error == "allow")
        self._listener = Listener(
            self._dsn, self._apply, self._listener_lost, self._listener_up,
            ping_interval=self._ping_interval,
            connect_timeout=self._settings.db_connect_timeout.total_seconds(),
        )
        try:
            await self._listener.start()
        except BaseException:
            await db.close()
            raise
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            await self._listener.close()
        if self._db is not None:
            with contextlib.suppress(ReadModelError):  # unreturned leases expire anyway
                await self.budgets.close()
            await self._db.close()
        for cache in self._caches:
            cache.clear()

    async def __aenter__(self) -> ReadModels:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- invalidation wiring -------------------------------------------------------------------

    def _apply(self, change: Invalidation) -> None:
        if change.flush_all:
            self.clear_caches()
            return
        self.keys.invalidate(change.key_hashes, change.key_ids)
        self.models.invalidate(change.models)
        self.usage.invalidate_spend(change.spend_key_ids)
        if change.spend_key_ids:
            self.budgets.spend_moved()

    def _listener_lost(self) -> None:
        for cache in self._caches:
            cache.storing = False
        self.clear_caches()

    def _listener_up(self) -> None:
        # Changes may have committed between the loss and this LISTEN: forget everything again.
        self.clear_caches()
        for cache in self._caches:
            cache.storing = True

    def clear_caches(self) -> None:
        """Forget every cached entry (the next lookups read PostgreSQL)."""
        self.keys.clear()
        self.models.clear()
        self.usage.clear()
        self.budgets.clear()

    # -- operations ----------------------------------------------------------------------------

    def _database(self) -> Database:
        if self._closed or self._db is None:
            raise ReadModelsClosedError("ReadModels is closed")
        return self._db

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    @property
    def listener_backend_pid(self) -> int | None:
        """Server pid of the LISTEN connection (``pg_terminate_backend`` target in tests)."""
        return None if self._listener is None else self._listener.backend_pid

    async def ping(self) -> float:
        """Round trip of ``SELECT 1`` in seconds; raises ``DatabaseUnavailableError``."""
        db = self._database()
        started = time.perf_counter()
        await db.fetchval("ping", "SELECT 1")
        return time.perf_counter() - started

    async def health(self) -> Health:
        """Whether the tables answer a query and the listener is up; never raises."""
        try:
            db = self._database()
        except ReadModelsClosedError as exc:
            return Health(False, False, None, str(exc))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                await db.fetchval("health check", _HEALTH)
        except (ReadModelError, TimeoutError) as exc:
            return Health(False, self.listening, None, str(exc) or "timed out")
        latency = time.perf_counter() - started
        listening = self.listening
        return Health(listening, listening, latency,
                      None if listening else "not listening for invalidations")

    def stats(self) -> Stats:
        db = self._database()
        listener = self._listener
        assert listener is not None
        pool = db.pool
        return Stats(
            pool=PoolStats(pool.get_size(), pool.get_idle_size(), pool.get_min_size(),
                           pool.get_max_size(), db.recycled),
            caches=MappingProxyType({cache.name: cache.stats() for cache in self._caches}),
            listening=listener.listening,
            listener_reconnects=listener.reconnects,
            listener_losses=listener.connection_losses,
            notifications=listener.notifications,
            authorize_unavailable=self.keys.unavailable,
        )


class _Opener:
    """What ``ReadModels.open`` returns: awaitable, and an async context manager."""

    def __init__(self, models: ReadModels) -> None:
        self._models = models

    def __await__(self) -> Generator[Any, None, ReadModels]:
        return self._models._start().__await__()

    async def __aenter__(self) -> ReadModels:
        return await self._models._start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._models.close()

