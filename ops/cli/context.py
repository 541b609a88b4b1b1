"""What every command needs: settings and the resolved server URLs."""

from __future__ import annotations

from functools import cache

from ledger.settings import Settings, load_settings
from ops.devstack import DevStack


@cache
def settings() -> Settings:
    return load_settings()


def stack() -> DevStack:
    return DevStack(settings())


def database_url() -> str:
    """DATABASE_URL, or the embedded server's URL when it is unset."""
    return stack().database_url


def kafka_bootstrap_servers() -> str:
    return stack().kafka_bootstrap_servers


def resolved_settings() -> Settings:
    """Settings with DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS filled from the dev stack."""
    dev = stack()
    return settings().model_copy(update={
        "database_url": dev.database_url,
        "kafka_bootstrap_servers": dev.kafka_bootstrap_servers,
    })
