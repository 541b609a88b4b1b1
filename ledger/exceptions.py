"""Error classes of the ``ledger`` package, one flat module so callers can catch by family.

:class:`LedgerError` is the root of every error the four packages raise: each package has
one exceptions module whose classes derive from it (``projections.exceptions``,
``readmodels.exceptions``, ``ops.exceptions``), so ``except LedgerError`` catches them all.

Every class carries a ``retriable`` class attribute (aiokafka style): ``True`` means the
same operation may succeed when repeated later, ``False`` means repeating it is pointless
(the input itself is wrong) and the caller should dead-letter or surface it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

if TYPE_CHECKING:
    from ledger.pricing import CostBreakdown


class LedgerError(Exception):
    """Base class of every error raised by ledger, projections, readmodels and ops."""

    retriable: bool = False


class EventDecodeError(LedgerError):
    """Bytes that are not a valid event: bad JSON, bad UTF-8 or a schema violation.

    ``reason`` is a short stable slug the projector writes into its dead-letter record.
    """

    retriable = False
    reason: str = "invalid_event"


class UnknownEventTypeError(EventDecodeError):
    """The ``type`` field names an event this reader does not know."""

    reason = "unknown_type"

    def __init__(self, event_type: object) -> None:
        super().__init__(f"unknown event type: {event_type!r}")
        self.event_type = event_type


class UnsupportedSchemaVersionError(EventDecodeError):
    """The event was written with a schema version newer than this reader knows.

    Not retriable for this process, but a newer deployment can read it, which is why it
    is kept distinct from a plain decode error.
    """

    reason = "unsupported_schema_version"

    def __init__(self, event_type: str, version: int, current: int) -> None:
        super().__init__(
            f"{event_type} schema_version {version} is newer than the supported {current}"
        )
        self.event_type = event_type
        self.version = version
        self.current = current


class ProducerError(LedgerError):
    """A record could neither be delivered to Kafka nor made durable in the spool."""

    retriable = True


class ProducerClosedError(ProducerError):
    """``emit`` was called on a producer that is not started or already closed."""

    retriable = False


class RecordRejectedError(ProducerError):
    """The broker refused this record on its own for good (too large): it is not retried,
    but kept in the spool's ``rejected/`` directory for an operator."""

    retriable = False


class LogRewoundError(ProducerError, KafkaError):  # type: ignore[misc]
    """A broker acknowledged a batch at an offset below one it acknowledged before: its log
    went backwards (restarted empty, topic recreated), so the batch is not trusted.

    Retriable: the producer spools the batch and re-sends it once the topic exists. It is
    also a ``KafkaError`` because it stands in the place of the broker's answer.
    """

    retriable = True


class SpoolError(ProducerError):
    """The local durable spool could not be opened, written or read."""

    retriable = False


class SpoolLockedError(SpoolError):
    """Another live process holds the spool directory; two writers would interleave."""

    retriable = True


class SettingsError(LedgerError):
    """A setting (environment variable) has a value the ledger cannot use."""


class TopicError(LedgerError):
    """The broker refused to create a topic (e.g. more replicas than brokers)."""


class DatabaseConnectError(LedgerError):
    """PostgreSQL could not be connected to: unreachable, refusing, or misconfigured."""

    retriable = True


class DatabaseSettingsError(DatabaseConnectError):
    """The connection settings are wrong, not the server away (``ledger.db.server_away``):
    asyncpg refused an option before trying (``sslmode=bogus`` in the URL, a PG* variable),
    or the server rejected the password or knows no such database. The setting must change,
    so trying again cannot help."""

    retriable = False


class UnpricedUsageError(LedgerError, ValueError):
    """The usage has units (tokens, images, seconds...) the model's prices do not cover.

    Not retriable: the same catalog gives the same answer. ``breakdown`` holds everything
    that *could* be priced, so a caller may still record a partial cost knowingly.
    """

    def __init__(self, breakdown: CostBreakdown) -> None:
        super().__init__(
            f"model {breakdown.model!r} has no price for: {', '.join(breakdown.unpriced)}"
        )
        self.breakdown = breakdown
        self.unpriced = breakdown.unpriced


class BudgetInputError(LedgerError, ValueError):
    """Bad budget input (scope, limit, period, timezone, thresholds): the message starts with
    the field it is about, so the CLI's one line names it."""

    retriable = False

    def __init__(self, field: str, problem: str = "invalid") -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
