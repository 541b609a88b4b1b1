"""``ledger schema``: the JSON Schema of every event, for gateways in other languages."""

from __future__ import annotations

import json

import typer


def register(root: typer.Typer) -> None:
    root.command("schema")(schema)


def schema() -> None:
    """Print the JSON Schema of every event type."""
    from ledger.schema import event_json_schema

    typer.echo(json.dumps(event_json_schema(), indent=2, sort_keys=True))
