"""Errors of the read models, all rooted in :class:`ReadModelError` so callers catch one family.

``ReadModelError`` derives from :class:`ledger.LedgerError`, the root of the four packages'
errors. Like the ledger's errors, every class carries ``retriable``: ``True`` means the same
call may succeed later (the database was unreachable), ``False`` means repeating it is
pointless (a wrong argument or connection setting, a query PostgreSQL rejects).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ledger.db import connect_problem, misconfigured, server_away
from ledger.exceptions import LedgerError


class ReadModelError(LedgerError):
    """Base class of every error raised by the read models."""

    retriable: bool = False


class ReadModelsClosedError(ReadModelError):
    """The ReadModels instance was closed (or never opened)."""


class DatabaseUnavailableError(ReadModelError):
    """PostgreSQL could not be reached or dropped the connection mid-query."""

    retriable = True


class DatabaseTimeoutError(DatabaseUnavailableError):
    """PostgreSQL did not answer within DB_ACQUIRE_TIMEOUT + DB_COMMAND_TIMEOUT."""


class QueryError(ReadModelError):
    """PostgreSQL rejected a read (for example a missing table: migrations not applied)."""


class InvalidArgumentError(ReadModelError, ValueError):
    """A caller passed an argument no query can answer (a limit of 0, an inverted range), or a
    DSN the driver refuses: not a PostgreSQL URL, or an option asyncpg rejects before it
    connects (``sslmode=bogus``, a ``sslrootcert`` file that is not there)."""


class ConnectionExpiredError(ReadModelError):
    """Raised by the pool's reset hook so that asyncpg closes a connection older than
    ``DB_CONN_MAX_LIFETIME`` instead of pooling it again; the release that triggers it
    suppresses it, so it never reaches a caller."""


@contextmanager
def translate_errors(what: str, timed_out: str = "timed out") -> Iterator[None]:
    """Re-raise driver errors as :class:`ReadModelError` subclasses naming ``what`` failed.

    ``timed_out`` says which limit a ``TimeoutError`` means (a setting name and value).
    """
    try:
        yield
    except ReadModelError:
        raise
    except TimeoutError as exc:
        raise DatabaseTimeoutError(f"{what}: database unavailable: {timed_out}") from exc
    except Exception as exc:
        if server_away(exc):  # the server, not the query: the rule the workers retry by
            raise DatabaseUnavailableError(f"{what}: database unavailable: {exc}") from exc
        if misconfigured(exc):  # an option asyncpg refuses, a certificate file not there
            raise InvalidArgumentError(f"{what}: {connect_problem(exc)}") from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise QueryError(f"{what}: {exc}") from exc
        raise
