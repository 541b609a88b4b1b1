"""Which errors mean "the database is away" (retry the same batch) rather than poison.

One home for the rule, so the runner retries and the projections dead-letter by the same
reading: everything listed here is retried with the batch intact; any other exception while
applying an event makes that event a dead letter.
"""

from __future__ import annotations

import asyncpg

from ledger.db import SERVER_AWAY

DB_OUTAGE: tuple[type[BaseException], ...] = (
    *SERVER_AWAY,  # the server away for new work (ledger.db, shared with the read models)
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure: retry is the cure
)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, DB_OUTAGE)
