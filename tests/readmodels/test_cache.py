"""The read-model cache's single-flight loads and their invalidation races, without a server.

Each loader here waits on an event the test sets, so the test decides exactly when a load
finishes relative to the callers, cancellations and invalidations around it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from readmodels.cache import MISSING, Cache


class GatedLoader:
    """A loader that counts its calls and returns ``value`` once ``release`` is set.

    With ``error``, it raises a new RuntimeError of that message instead (new each time: a
    kept exception would keep its traceback, and with it the load's task, alive).
    """

    def __init__(self, value: str | None = "v", error: str | None = None) -> None:
        self.value = value
        self.error = error
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, key: str) -> str | None:
        self.calls.append(key)
        await self.release.wait()
        if self.error is not None:
            raise RuntimeError(self.error)
        return None if self.value is None else f"{self.value}:{key}"


async def _settle() -> None:
    """Let every ready task run until none is (the loads, then their callers)."""
    for _ in range(5):
        await asyncio.sleep(0)


def _callers(cache: Cache[str, str], key: str, loader: GatedLoader, n: int) -> list[
        asyncio.Task[str | None]]:
    return [asyncio.create_task(cache.load(key, loader)) for _ in range(n)]


async def test_concurrent_callers_share_one_load_and_its_result_is_stored() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    loader = GatedLoader()
    callers = _callers(cache, "a", loader, 5)
    await _settle()
    assert loader.calls == ["a"]
    loader.release.set()
    assert await asyncio.gather(*callers) == ["v:a"] * 5
    assert cache.lookup("a") == "v:a"
    assert cache.stats().loads == 1


async def test_different_keys_load_separately() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    loader = GatedLoader()
    callers = _callers(cache, "a", loader, 2) + _callers(cache, "b", loader, 2)
    await _settle()
    assert sorted(loader.calls) == ["a", "b"]
    loader.release.set()
    assert await asyncio.gather(*callers) == ["v:a", "v:a", "v:b", "v:b"]


async def test_a_cancelled_caller_does_not_cancel_the_load_of_the_others() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    loader = GatedLoader()
    first, second = _callers(cache, "a", loader, 2)
    await _settle()
    first.cancel()
    await _settle()
    loader.release.set()
    assert await second == "v:a"
    assert first.cancelled()
    assert cache.lookup("a") == "v:a"  # the load ran to the end and was stored
    assert loader.calls == ["a"]


async def test_a_load_finishing_after_every_caller_left_is_still_stored() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    loader = GatedLoader()
    (only,) = _callers(cache, "a", loader, 1)
    await _settle()
    only.cancel()
    loader.release.set()
    await _settle()
    assert cache.lookup("a") == "v:a"


@pytest.mark.parametrize("invalidate", [
    pytest.param(lambda cache: cache.evict("a"), id="evict"),
    pytest.param(lambda cache: cache.clear(), id="clear"),
    pytest.param(lambda cache: cache.abandon_flights(), id="abandon_flights"),
])
async def test_an_invalidation_during_a_load_answers_the_waiting_callers_but_stores_nothing(
    invalidate: Callable[[Cache[str, str]], object],
) -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    stale = GatedLoader(value="old")
    waiting = _callers(cache, "a", stale, 2)
    await _settle()
    invalidate(cache)
    # A caller arriving after the invalidation must not join the stale load: it starts anew.
    fresh = GatedLoader(value="new")
    (later,) = _callers(cache, "a", fresh, 1)
    await _settle()
    assert fresh.calls == ["a"]
    stale.release.set()
    assert await asyncio.gather(*waiting) == ["old:a", "old:a"]
    assert cache.lookup("a") is MISSING  # the stale result was not stored
    fresh.release.set()
    assert await later == "new:a"
    assert cache.lookup("a") == "new:a"


async def test_a_stale_load_ending_after_a_fresh_one_does_not_overwrite_it() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    stale, fresh = GatedLoader(value="old"), GatedLoader(value="new")
    (old,) = _callers(cache, "a", stale, 1)
    await _settle()
    cache.evict("a")
    (new,) = _callers(cache, "a", fresh, 1)
    await _settle()
    fresh.release.set()
    assert await new == "new:a"
    stale.release.set()
    assert await old == "old:a"
    assert cache.lookup("a") == "new:a"


async def test_while_not_storing_loads_still_coalesce_but_nothing_is_kept() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    cache.storing = False
    loader = GatedLoader()
    callers = _callers(cache, "a", loader, 3)
    await _settle()
    loader.release.set()
    assert await asyncio.gather(*callers) == ["v:a"] * 3
    assert loader.calls == ["a"]
    assert cache.lookup("a") is MISSING


async def test_a_none_result_is_a_negative_entry_only_when_negative_caching_is_on() -> None:
    with_negative: Cache[str, str] = Cache("t", maxsize=10, ttl=60, negative_ttl=30)
    without: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    for cache in (with_negative, without):
        loader = GatedLoader(value=None)
        loader.release.set()
        assert await cache.load("a", loader) is None
    assert with_negative.lookup("a") is None
    assert with_negative.stats().negative_hits == 1
    assert without.lookup("a") is MISSING


async def test_a_failed_load_raises_in_every_caller_and_the_next_load_retries() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    failing = GatedLoader(error="database gone")
    callers = _callers(cache, "a", failing, 3)
    await _settle()
    failing.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [str(r) for r in results] == ["database gone"] * 3
    assert cache.lookup("a") is MISSING
    retry = GatedLoader()
    retry.release.set()
    assert await cache.load("a", retry) == "v:a"


@pytest.fixture
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What the running loop's exception handler reports (e.g. never-retrieved exceptions)."""
    loop = asyncio.get_event_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


async def _abandon_a_failing_load(cache: Cache[str, str]) -> None:
    """Every caller cancelled, then the load fails; no reference to it outlives this frame."""
    failing = GatedLoader(error="database gone")
    callers = _callers(cache, "a", failing, 2)
    await _settle()
    for caller in callers:
        caller.cancel()
    await _settle()
    failing.release.set()
    await _settle()


async def test_a_failed_load_nobody_waits_for_leaves_no_unretrieved_exception(
    loop_errors: list[dict[str, Any]],
) -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    await _abandon_a_failing_load(cache)
    gc.collect()  # a never-retrieved exception is reported when its task is collected
    await _settle()
    assert [c.get("message") for c in loop_errors] == []


async def test_hits_misses_and_loads_are_counted() -> None:
    cache: Cache[str, str] = Cache("t", maxsize=10, ttl=60)
    assert cache.lookup("a") is MISSING
    loader = GatedLoader()
    loader.release.set()
    await cache.load("a", loader)
    assert cache.lookup("a") == "v:a"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.hit_rate) == (1, 1, 1, 0.5)
