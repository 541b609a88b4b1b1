"""Which errors mean "the database is away" (retry the same batch) rather than poison.

One home for the rule, so the runner retries and the projections dead-letter by the same
reading: everything ``is_outage`` accepts is retried with the batch intact; any other
exception while applying an event makes that event a dead letter, and any other exception
while connecting stops the worker (a wrong setting, such as ``sslmode=bogus``, never heals).
"""

from __future__ import annotations

import asyncpg

from ledger.db import server_away


def is_outage(exc: BaseException) -> bool:
    # The server away for new work (ledger.db, shared with the read models), or a deadlock or
    # serialization failure: retrying is the cure.
    return server_away(exc) or isinstance(exc, asyncpg.TransactionRollbackError)
