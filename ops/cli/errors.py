"""The CLI's one error boundary: a failure an operator can act on is one line on stderr.

``explain`` maps the exceptions a wrong setting, an unreachable server or a bad argument
produce (any ``LedgerError``, the root of the four packages' errors; asyncpg, aiokafka,
pydantic, OSError) to one line naming what is wrong: the server with its URL (password
hidden) and the setting it came from, the field, the file. Anything else is a bug and keeps
its traceback.

Retries are not this module's business: ``ledger project`` waits for its servers inside the
worker, so nothing reaches this boundary while it retries.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import asyncpg
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from ledger.db import DatabaseConnectError, connect_problem, misconfigured, one_line, redact_url
from ledger.exceptions import LedgerError
from ledger.settings import variable_name
from ops.cli import context
from readmodels.exceptions import ReadModelError

# Commands that log on purpose (long-running workers); the others report through ``explain``.
_LOGGING_COMMANDS = frozenset({"project"})
_MAX_INPUT_SHOWN = 80


def before_command(ctx: typer.Context) -> None:
    """Root callback: keep the Kafka client's connection chatter off a one-shot command.

    aiokafka logs every failed connection attempt at ERROR; with no handler configured Python
    prints each one on stderr, so ``topics ensure`` against a stopped broker printed a dozen
    lines before its error. The error itself still reaches ``explain``.
    """
    if ctx.invoked_subcommand not in _LOGGING_COMMANDS:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def explain(exc: BaseException) -> str | None:
    """One line for a failure the operator can fix, or None for a bug."""
    if isinstance(exc, ValidationError):
        return _invalid(exc)
    if isinstance(exc, DatabaseConnectError):
        return connect_failure(exc)
    if isinstance(exc, ReadModelError):  # before LedgerError, its root: name the server
        return f"{_postgres()}: {one_line(exc)}{_hint(exc.__cause__)}"
    if isinstance(exc, LedgerError):
        return one_line(exc)
    if misconfigured(exc):  # from `ledger project`'s runners; before OSError, its base class
        return f"{_postgres()}: {connect_problem(exc)}"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"{_postgres()}: {one_line(exc)}{_hint(exc)}"
    if isinstance(exc, KafkaError):
        text = one_line(exc).removeprefix(f"{type(exc).__name__}: ")
        if text.startswith("Unable to bootstrap"):
            text = "cannot connect to any bootstrap server"
        return f"{_kafka()}: {text if text != type(exc).__name__ else 'no answer'}"
    if isinstance(exc, OSError):  # a file or directory: the message names it
        return one_line(exc)
    return None


def connect_failure(exc: DatabaseConnectError) -> str:
    """The server, why it could not be connected to, and the variable its URL came from."""
    return f"{one_line(exc)} ({_origin('database_url')})"


def usage_line(exc: typer.TyperException) -> str:
    """click's usage error (bad value, missing or unknown option or command) as one line.

    A parameter click knows is named by click (``Invalid value for '--prompt': ...``); a
    command that raises ``BadParameter`` without one names the option in its message.
    """
    if isinstance(exc, typer.BadParameter) and exc.param is None and exc.param_hint is None:
        text = exc.message
    else:
        text = exc.format_message()
    return " ".join(text.split())


def _origin(field: str) -> str:
    """Where a server's address came from: the variable set, or the embedded stack."""
    variable = variable_name(field)
    try:
        configured = getattr(context.settings(), field)
    except LedgerError:
        configured = None
    if configured:
        return variable
    return f"the embedded dev stack, {variable} is unset; `ledger dev up` starts it"


def _postgres() -> str:
    try:
        url = redact_url(context.database_url())
    except (LedgerError, OSError):
        return f"PostgreSQL ({variable_name('database_url')})"
    return f"PostgreSQL at {url} ({_origin('database_url')})"


def _kafka() -> str:
    try:
        servers = context.kafka_bootstrap_servers()
    except (LedgerError, OSError):
        return f"Kafka ({variable_name('kafka_bootstrap_servers')})"
    return f"Kafka at {servers} ({_origin('kafka_bootstrap_servers')})"


def _hint(cause: BaseException | None) -> str:
    """What to do about the few database errors an operator causes."""
    if isinstance(cause, asyncpg.UndefinedTableError):
        return " (is the schema there? run `ledger migrate`)"
    if isinstance(cause, asyncpg.QueryCanceledError) and "statement timeout" in str(cause):
        try:
            limit = f"{context.settings().db_statement_timeout.total_seconds():g}s"
        except LedgerError:
            limit = "set"
        return f" (DB_STATEMENT_TIMEOUT is {limit}; raise it, or 0 for none)"
    return ""


def _invalid(exc: ValidationError) -> str:
    """``invalid ApiKeyCreated: max_budget_usd: Input should be ... (got -5)``."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{field}: {error['msg']} (got {_shown(error.get('input'))})")
    return f"invalid {exc.title}: " + "; ".join(parts)


def _shown(value: object) -> str:
    text = str(value) if isinstance(value, Decimal | int | float) else repr(value)
    return text if len(text) <= _MAX_INPUT_SHOWN else text[:_MAX_INPUT_SHOWN] + "..."
