"""``ledger topics ensure``: create the ledger's topics and check the existing ones."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from ledger.topics import ensure_topics, topic_differences, topic_specs
from ops.cli import context

topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
console = Console()


def register(root: typer.Typer) -> None:
    root.add_typer(topics_app, name="topics")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the usage, keys and catalog topics if they do not exist; check existing ones.

    Exit status 2 when an existing topic differs from the settings (one line each on
    stderr): a shorter retention would make a rebuild lose history, so a deployment that
    runs this before the projectors stops there.
    """
    specs = topic_specs(context.settings())
    bootstrap = context.kafka_bootstrap_servers()
    created = asyncio.run(ensure_topics(bootstrap, specs))
    differences = asyncio.run(topic_differences(bootstrap, specs))
    for spec in specs:
        mark = "created" if spec.name in created else "exists"
        console.print(f"{spec.name}: {spec.partitions} partitions ({mark})")
    for difference in differences:
        typer.echo(f"differs: {difference}", err=True)
    if differences:
        raise typer.Exit(2)
