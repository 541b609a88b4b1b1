"""The one polling helper of the test suite: wait until a condition holds, or fail saying what.

Tests wait on something another task or process does (a worker projecting, a notification
arriving); they poll for the outcome instead of sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition",
    *, interval: float = 0.05,
) -> float:
    """Poll ``check`` every ``interval`` seconds until true; return the seconds it took.

    Fails with an AssertionError naming ``what`` after ``timeout`` seconds. ``check`` is
    asked once more at the deadline, so a slow check never fails a condition that holds.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        if await check():
            return loop.time() - started
        if loop.time() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
