"""A small cache over cachetools' TTLCache: counters, negative entries, single-flight loads.

The hit path (:meth:`Cache.lookup`) is synchronous and does one TTLCache lookup plus a counter
increment, so a reader can answer a cached key without creating a task or touching a lock:
asyncio runs one callback at a time, so no lock is needed between lookup and store.

Invalidation races: a load that started before an invalidation may come back with rows read
before the change committed. Each in-flight load is a :class:`_Flight`; :meth:`Cache.evict`
and :meth:`Cache.clear` mark the affected flights stale (and detach them, so later callers start
a fresh load), and a stale flight hands its result to the callers already waiting but never
stores it. Together with the notification being delivered only after the writer's commit, no
entry can outlive the invalidation of the data it was read from.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from cachetools import TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Missing(enum.Enum):
    MISSING = 0


MISSING: Final = _Missing.MISSING
"""Returned by :meth:`Cache.lookup` when the cache holds nothing (positive or negative)."""

Missing = Literal[_Missing.MISSING]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of one cache since it was created; ``size`` counts negative entries too."""

    name: str
    hits: int
    negative_hits: int
    misses: int
    loads: int
    evictions: int  # capacity and TTL expiry
    invalidations: int  # entries removed by a notification
    clears: int
    size: int
    maxsize: int
    hit_rate: float


class _CountingTTLCache(TTLCache[K, V, float]):
    """TTLCache that counts the entries it drops for capacity or expiry."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        super().__init__(maxsize, ttl, timer)
        self.evictions = 0

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[K, V]]:
        expired = super().expire(time)
        if expired:
            self.evictions += len(expired)
        return expired


class _Flight:
    """One in-flight load; ``stale`` is set when the key is invalidated while it runs."""

    __slots__ = ("stale", "task")

    def __init__(self) -> None:
        self.stale = False
        self.task: asyncio.Task[object] | None = None


def _consume_exception(task: asyncio.Task[object]) -> None:
    # Every caller may have been cancelled before the load failed; retrieving the exception
    # here keeps asyncio from logging "exception was never retrieved" for it.
    if not task.cancelled():
        task.exception()


class Cache(Generic[K, V]):
    """TTL cache of ``V`` by ``K``; ``None`` results are negative entries with their own TTL."""

    __slots__ = (
        "_flights", "_negative", "_positive", "clears", "hits", "invalidations", "loads",
        "maxsize", "misses", "name", "negative_hits", "storing",
    )

    def __init__(
        self,
        name: str,
        maxsize: int,
        ttl: float,
        negative_ttl: float | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.maxsize = maxsize
        self._positive: _CountingTTLCache[K, V] = _CountingTTLCache(maxsize, ttl, timer)
        # Negative entries live in their own TTLCache: a flood of random bad keys can then only
        # push out other negative entries, never the valid keys a gateway is serving.
        self._negative: _CountingTTLCache[K, bool] | None = (
            _CountingTTLCache(maxsize, negative_ttl, timer)
            if negative_ttl is not None and negative_ttl > 0 else None
        )
        self._flights: dict[K, _Flight] = {}
        self.hits = 0
        self.negative_hits = 0
        self.misses = 0
        self.loads = 0
        self.invalidations = 0
        self.clears = 0
        # False while invalidations cannot be received (listener down): loads still coalesce
        # but nothing is stored, since nobody would evict it.
        self.storing = True

    def lookup(self, key: K) -> V | Missing | None:
        """The cached value, ``None`` for a cached negative answer, or :data:`MISSING`."""
        try:
            value = self._positive[key]
        except KeyError:
            pass
        else:
            self.hits += 1
            return value
        negative = self._negative
        if negative is not None and key in negative:
            self.hits += 1
            self.negative_hits += 1
            return None
        self.misses += 1
        return MISSING

    async def load(self, key: K, loader: Callable[[K], Awaitable[V | None]]) -> V | None:
        """Run ``loader(key)`` once for all concurrent callers and store its result.

        The load runs in its own task so a cancelled caller does not cancel the others.
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
                self._fill(key, loader, flight)
            )
            task.add_done_callback(_consume_exception)
            flight.task = task
        assert flight.task is not None
        result = await asyncio.shield(flight.task)
        return result  # type: ignore[return-value]  # the task runs _fill, typed V | None

    async def _fill(
        self, key: K, loader: Callable[[K], Awaitable[V | None]], flight: _Flight
    ) -> V | None:
        self.loads += 1
        try:
            value = await loader(key)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
        if not flight.stale and self.storing:
            self.put(key, value)
        return value

    def put(self, key: K, value: V | None) -> None:
        """Store ``value`` (``None``: a negative entry, if negative caching is on)."""
        if value is None:
            self._positive.pop(key, None)
            if self._negative is not None:
                self._negative[key] = True
        else:
            if self._negative is not None:
                self._negative.pop(key, None)
            self._positive[key] = value

    def peek(self, key: K) -> V | None:
        """The positive entry without counting a hit or a miss (for invalidation bookkeeping)."""
        return self._positive.get(key)

    def evict(self, key: K) -> bool:
        """Drop ``key`` (positive or negative) and make a running load of it not store."""
        removed = self._positive.pop(key, MISSING) is not MISSING
        if self._negative is not None and self._negative.pop(key, MISSING) is not MISSING:
            removed = True
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.stale = True
        if removed:
            self.invalidations += 1
        return removed

    def abandon_flights(self) -> None:
        """Make every running load not store: for invalidations that cannot name their keys."""
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()

    def clear(self) -> None:
        """Drop everything and make every running load not store its result."""
        self._positive.clear()
        if self._negative is not None:
            self._negative.clear()
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()
        self.clears += 1

    def keys(self) -> Iterator[K]:
        """Keys of the live positive entries (a snapshot)."""
        return iter(list(self._positive))

    def __contains__(self, key: object) -> bool:
        return key in self._positive or (self._negative is not None and key in self._negative)

    def __len__(self) -> int:
        return len(self._positive) + (len(self._negative) if self._negative is not None else 0)

    def stats(self) -> CacheStats:
        lookups = self.hits + self.misses
        evictions = self._positive.evictions
        if self._negative is not None:
            evictions += self._negative.evictions
        return CacheStats(
            name=self.name, hits=self.hits, negative_hits=self.negative_hits,
            misses=self.misses, loads=self.loads, evictions=evictions,
            invalidations=self.invalidations, clears=self.clears, size=len(self),
            maxsize=self.maxsize, hit_rate=self.hits / lookups if lookups else 0.0,
        )
