"""Which errors mean "the database is away" (retry the same batch) rather than poison.

One home for the rule, so the runner retries and the projections dead-letter by the same
reading: everything listed here is retried with the batch intact; any other exception while
applying an event makes that event a dead letter.
"""

from __future__ import annotations

import asyncio

import asyncpg

DB_OUTAGE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed underneath us
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,  # admin/crash shutdown, statement timeout
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure: retry is the cure
)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, DB_OUTAGE)
