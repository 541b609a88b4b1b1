"""The ``ledger`` command line: one typer app, one module per command group."""

from __future__ import annotations

import sys

from ledger.cli.app import app
from ledger.exceptions import LedgerError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: a LedgerError ends the command with one clear line, never a traceback."""
    try:
        app()
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
