"""The ``ledger`` command line: one typer app, one module per command group."""

from __future__ import annotations

import sys

from ops.cli.app import app
from ops.cli.errors import explain

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: a failure the operator can fix ends the command with one line, exit 1.

    ``ops.cli.errors.explain`` decides which failures those are; a bug keeps its traceback.
    """
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
