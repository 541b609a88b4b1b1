"""The real servers the test session runs against.

Default: the embedded PostgreSQL 18 and Tansu broker, started once per session on free ports,
each writing to a log file. With ``LEDGER_TEST_DOCKER=1`` and a Docker engine that answers,
testcontainers' PostgreSQL and Kafka containers are used instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.devstack import EmbeddedBroker, EmbeddedPostgres
from ops.devstack.ports import free_port


@dataclass
class Servers:
    admin_dsn: str  # superuser DSN of the maintenance database
    kafka_bootstrap: str
    postgres: EmbeddedPostgres | None  # None when not embedded (cannot be restarted by tests)
    broker: EmbeddedBroker | None


def docker_requested() -> bool:
    if os.environ.get("LEDGER_TEST_DOCKER") != "1":
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@contextmanager
def embedded_servers(root: Path) -> Iterator[Servers]:
    postgres = EmbeddedPostgres(root / "pg" / "pgdata", free_port())
    broker = EmbeddedBroker(root / "kafka", free_port())
    try:
        postgres.start()
        broker.start()
        yield Servers(postgres.dsn, broker.bootstrap_servers, postgres, broker)
    finally:
        broker.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def docker_servers() -> Iterator[Servers]:  # pragma: no cover - needs a Docker engine
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:18", driver=None) as pg, KafkaContainer() as kafka:
        yield Servers(pg.get_connection_url(), kafka.get_bootstrap_server(), None, None)
