"""Error classes of the ledger, one flat module so callers can catch by family.

Every class carries a ``retriable`` class attribute (aiokafka style): ``True`` means the
same operation may succeed when repeated later, ``False`` means repeating it is pointless
(the input itself is wrong) and the caller should dead-letter or surface it.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by the ledger library."""

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


class SpoolError(ProducerError):
    """The local durable spool could not be opened, written or read."""

    retriable = False


class SpoolLockedError(SpoolError):
    """Another live process holds the spool directory; two writers would interleave."""

    retriable = True


class SettingsError(LedgerError):
    """A setting (environment variable) has a value the ledger cannot use."""


class MigrationError(LedgerError):
    """A migration could not be applied, or an applied migration file was changed."""


class DevStackError(LedgerError):
    """The embedded dev stack could not start or stop (port taken, binary missing...)."""


class TopicError(LedgerError):
    """The broker refused to create a topic (e.g. more replicas than brokers)."""
