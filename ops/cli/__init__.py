"""The ``ledger`` command line: one typer app, one module per command group."""

from __future__ import annotations

import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer >= 0.25 carries its own click

from ops.cli.app import app
from ops.cli.errors import explain, usage_line

__all__ = ["app", "main"]

# click's status for "no subcommand given": the help is printed, as when it ran standalone.
EXIT_HELP_SHOWN = 2


def main() -> None:
    """Entry point: a failure the operator can fix ends the command with one line, exit 1.

    click (typer's own copy of it) runs outside its standalone mode, so that its usage errors
    (a bad option value, a missing or unknown option or command) reach this boundary instead
    of becoming click's multi-line usage box with exit 2. ``ops.cli.errors`` decides which
    failures those are; a bug keeps its traceback. A command's own exit status
    (``typer.Exit``) is kept.
    """
    try:
        status = app(standalone_mode=False, prog_name="ledger")
    except NoArgsIsHelpError:
        sys.exit(EXIT_HELP_SHOWN)  # typer printed the help on stdout while raising it
    except typer.TyperException as exc:  # click's usage errors derive from it
        _fail(usage_line(exc))
    except typer.Abort:  # end of input at a prompt
        _fail("aborted")
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        _fail(line)
    # typer.Exit(code) and Ctrl-C (typer's Exit(130)) come back as the status; commands
    # themselves return None.
    sys.exit(status if isinstance(status, int) else 0)


def _fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(1)
