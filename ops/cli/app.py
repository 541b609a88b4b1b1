"""The root typer app; command groups register themselves here."""

from __future__ import annotations

import typer

from ops.cli import (
    budgets_cmd,
    catalog_cmd,
    demo_cmd,
    dev,
    errors,
    keys_cmd,
    migrate_cmd,
    project,
    reconcile_cmd,
    schema_cmd,
    topics_cmd,
    usage_cmd,
)

app = typer.Typer(
    name="ledger",
    help="Event-sourced usage and spend ledger for LLM gateways.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.callback()(errors.before_command)
app.add_typer(dev.app, name="dev")
migrate_cmd.register(app)
topics_cmd.register(app)
schema_cmd.register(app)
project.register(app)
catalog_cmd.register(app)
keys_cmd.register(app)
usage_cmd.register(app)
budgets_cmd.register(app)
demo_cmd.register(app)
reconcile_cmd.register(app)
