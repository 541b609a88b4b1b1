"""Every error the ``projections`` package raises, rooted in :class:`ProjectionError`.

``ProjectionError`` derives from :class:`ledger.LedgerError`, the root of the four
packages' errors; ``retriable`` keeps its meaning (``True``: the same batch may succeed
when tried again).
"""

from __future__ import annotations

from ledger.exceptions import LedgerError


class ProjectionError(LedgerError):
    """Base of every projector error."""


class PartitionLostError(ProjectionError):
    """A fenced checkpoint update matched no row: another worker owns the partition now.

    The batch's transaction is rolled back and the worker re-reads its checkpoints; nothing
    is applied twice.
    """

    retriable = True


class RebalanceFailedError(ProjectionError):
    """Handling a partition assignment failed (aiokafka swallows these, so we stop ourselves)."""


class UnknownProjectionError(ProjectionError):
    """A projection name that is not usage, keys or catalog."""


class RebuildError(ProjectionError):
    """A rebuild could not complete; the live tables are untouched."""


class ReconcileError(ProjectionError):
    """Reconciling or repairing the usage summaries could not complete; nothing was changed."""


class HandlerError(ProjectionError):
    """The event is valid but cannot be applied to the current state (e.g. unknown key).

    A sequential projection turns it into a dead letter for that event alone.
    """


class RepricingError(ProjectionError):
    """Re-pricing could not write what it read; the catalog batch rolls back."""
