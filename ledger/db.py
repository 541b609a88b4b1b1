"""Connections to PostgreSQL from the CLI and the workers: bounded, and failing with one line.

Every connection opened here gives up connecting after ``DB_CONNECT_TIMEOUT`` and runs with a
server-side ``statement_timeout`` (``DB_STATEMENT_TIMEOUT``, or ``DB_MIGRATE_STATEMENT_TIMEOUT``
for ``ledger migrate``), so no command or worker can wait forever on a server that stopped
answering or on a lock somebody else holds. A failure to connect is a
:class:`DatabaseConnectError` whose message names the server (password hidden) and why:
retriable when :func:`server_away` reads it as the server away, else its subclass
:class:`DatabaseSettingsError` (not retriable: an option asyncpg refuses, ``sslmode=bogus``;
a certificate file the settings name that is not there; a password the server rejects; a
database that does not exist).

The read models' pool is configured in ``readmodels/readmodels.py`` (client-side timeouts,
since a gateway must get its answer back even from a server that no longer answers at all).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

# Defined with the package's other errors; re-exported: callers import them from here too.
from ledger.exceptions import DatabaseConnectError as DatabaseConnectError
from ledger.exceptions import DatabaseSettingsError as DatabaseSettingsError

if TYPE_CHECKING:
    from ledger.settings import Settings

# asyncpg's error for a connection option it refuses before it tries to connect (``sslmode``,
# ``sslnegotiation``, a TLS version, ``target_session_attrs``... in the URL or a PG* variable):
# the configuration is wrong and stays wrong however often it is tried. asyncpg derives it
# from InterfaceError, which _AWAY lists, so ``server_away`` carves it out.
MISCONFIGURED: tuple[type[BaseException], ...] = (asyncpg.ClientConfigurationError,)

# Where asyncpg reads its connection arguments, before any I/O. It loads the TLS files they
# name there (sslrootcert, sslcert, sslkey, sslcrl; in the URL or PGSSL* variables), and one
# it cannot read raises a bare OSError: FileNotFoundError(2) without a file name, or
# IsADirectoryError, or ssl.SSLError for a file that holds no certificate. By type that is a
# network error, and a Unix socket the server has not created yet (it is starting) raises the
# very same FileNotFoundError(2), which must stay "away". Only where it was raised tells them
# apart. tests/projections/test_outage.py pins both, should asyncpg rename this function.
_READING_ARGUMENTS = ("asyncpg.connect_utils", "_parse_connect_dsn_and_args")


def _raised_reading_arguments(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while asyncpg read its connection arguments."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) == _READING_ARGUMENTS:
            return True
        tb = tb.tb_next
    return False


def misconfigured(exc: BaseException) -> bool:
    """Whether a driver error means our connection settings are wrong, found before asyncpg
    tried to connect: an option it refuses (MISCONFIGURED), or a file they name that it cannot
    read. Trying again cannot help; the setting must change."""
    return isinstance(exc, MISCONFIGURED) or (
        isinstance(exc, OSError) and _raised_reading_arguments(exc))


def connect_problem(exc: BaseException) -> str:
    """What is wrong, on one line. asyncpg's OSError for a file the settings name says only
    "No such file or directory", so the line says which settings name files."""
    if isinstance(exc, OSError) and _raised_reading_arguments(exc):
        return ("cannot read a TLS file the connection settings name (sslrootcert, sslcert, "
                f"sslkey or sslcrl, or their PGSSL* variables): {one_line(exc)}")
    return one_line(exc)

_AWAY: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed underneath us (not MISCONFIGURED)
    asyncpg.CannotConnectNowError,  # starting up, shutting down
    asyncpg.OperatorInterventionError,  # admin shutdown, pg_terminate_backend, timeouts
    asyncpg.InsufficientResourcesError,  # too many connections, disk full, out of memory
)


def server_away(exc: BaseException) -> bool:
    """Whether a driver error means the server is away for new work, so worth retrying later.

    The connection failed, the server is starting, shutting down or out of resources; not
    that the statement is wrong, and not that our connection settings are (``misconfigured``:
    an option asyncpg refuses, a certificate file it cannot read).
    One rule for the workers (projections.outage: retry the batch) and the read models
    (readmodels.exceptions: "unavailable"). A function, not a tuple for ``except``: asyncpg's
    class tree puts a configuration error under InterfaceError, and only a check can say
    "InterfaceError, but not that one".
    """
    return isinstance(exc, _AWAY) and not misconfigured(exc)


URL_EXAMPLE = "postgresql://user:password@host:5432/database"
_SCHEMES = ("postgresql", "postgres")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}:***{at}{host}" if colon else url


def check_postgres_url(url: str) -> None:
    """Raise ``ValueError`` (one line, no password) unless ``url`` can be a PostgreSQL URL.

    Only the shape is checked (scheme, port); asyncpg reports the rest when it connects.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a PostgreSQL URL ({exc}); expected {URL_EXAMPLE}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"not a PostgreSQL URL; expected {URL_EXAMPLE}")


def statement_timeout_setting(timeout: timedelta) -> dict[str, str]:
    """``server_settings`` for asyncpg: ``statement_timeout`` in ms (0 means none)."""
    return {"statement_timeout": str(max(round(timeout.total_seconds() * 1000), 0))}


def connect_options(settings: Settings, statement_timeout: timedelta | None = None
                    ) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect``: the connect timeout and statement timeout.

    ``statement_timeout`` defaults to ``DB_STATEMENT_TIMEOUT``.
    """
    timeout = settings.db_statement_timeout if statement_timeout is None else statement_timeout
    return {
        "timeout": settings.db_connect_timeout.total_seconds(),
        "server_settings": statement_timeout_setting(timeout),
    }


# What asyncpg raises when it cannot get a session: the server is away (OSError, timeout),
# refuses us (auth, unknown database: PostgresError) or the URL is unusable (InterfaceError,
# ValueError from its parser, MISCONFIGURED).
_CONNECT_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                     ValueError)


async def connect(dsn: str, settings: Settings, *, statement_timeout: timedelta | None = None
                  ) -> asyncpg.Connection:
    """Open a connection bounded by the settings' timeouts, or raise one clear line.

    Retriable (:class:`DatabaseConnectError`) exactly when ``server_away`` says so, the rule
    the runners retry by; anything else is a :class:`DatabaseSettingsError`, so a caller that
    retries on ``retriable`` (the alert relay) stops where the runners stop.
    """
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, **connect_options(settings, statement_timeout))
    except TimeoutError:
        raise DatabaseConnectError(
            f"cannot connect to PostgreSQL at {redact_url(dsn)}: no answer within "
            f"{settings.db_connect_timeout.total_seconds():g}s (DB_CONNECT_TIMEOUT)") from None
    except _CONNECT_FAILURES as exc:
        error = DatabaseConnectError if server_away(exc) else DatabaseSettingsError
        raise error(
            f"cannot connect to PostgreSQL at {redact_url(dsn)}: {connect_problem(exc)}"
        ) from None
    return conn


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
