"""Lifecycle helpers of a runner: stopping in bounded time, log starts, offset errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

log = logging.getLogger("ledger.projector")
_T = TypeVar("_T")
STOP_GRACE_S = 10.0  # for the batch in hand, once stop is asked


async def unless_stopped(work: Coroutine[Any, Any, object], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first (then cancel it); True if it completed."""
    return await unless_stopped_value(work, stop) is not None


async def unless_stopped_value(
    work: Coroutine[Any, Any, _T], stop: asyncio.Event
) -> _T | None:
    """``work``'s result, or None when ``stop`` was set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def finish_within_grace(
    committing: asyncio.Task[None], stop: asyncio.Event, name: str
) -> None:
    """Await the commit stage; once stop is set, give it STOP_GRACE_S, then cancel it.

    A batch still in hand then (its transaction waiting on a database or broker that is
    away) was never committed: the next owner of its partitions applies it again.
    """
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({committing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not committing.done():
        await asyncio.wait({committing}, timeout=STOP_GRACE_S)
    if not committing.done():
        log.warning("%s: the batch in hand did not commit within %.0fs of stop; abandoning it "
                    "uncommitted (the partition's next owner applies it)", name, STOP_GRACE_S)
        committing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committing
        return
    committing.result()


async def log_starts(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's log start; 0 where the broker does not say (a topic being recreated)."""
    try:
        found = await asyncio.wait_for(consumer.beginning_offsets(partitions), timeout=10)
    except (KafkaError, TimeoutError) as exc:
        log.warning("log start offsets unavailable (%s); assuming 0", exc)
        found = {}
    return {tp: int(found.get(tp) or 0) for tp in partitions}


def out_of_range(exc: OffsetOutOfRangeError) -> list[TopicPartition]:
    found = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return list(found)
