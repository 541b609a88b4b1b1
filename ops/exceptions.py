"""Every error the operator shell raises, rooted in :class:`OpsError`.

``OpsError`` derives from :class:`ledger.LedgerError`, the root of the four packages'
errors, so the CLI's one error boundary (``ops.cli.errors.explain``) prints each of them as
one line. None is retriable: each says what an operator must change (a file, an option, a
server) before running the command again.
"""

from __future__ import annotations

from ledger.exceptions import LedgerError


class OpsError(LedgerError):
    """Base of every error of the operator shell (CLI, migrations, dev stack, importer)."""


class MigrationError(OpsError):
    """A migration could not be applied, or an applied migration file was changed."""


class DevStackError(OpsError):
    """The embedded dev stack could not start or stop (port taken, binary missing...)."""


class CatalogImportError(OpsError):
    """The price map could not be read or parsed, the import lacks a database or a broker, its
    events were not delivered, or the projection did not apply them within the wait."""


class CatalogLookupError(OpsError):
    """A model name that resolves to nothing in the catalog consulted: the database's, or the
    packaged snapshot's when no database answers (``ledger models show``, ``ledger cost``)."""


class CostOptionError(OpsError):
    """An option of ``ledger cost`` that is not one of the values it takes."""
