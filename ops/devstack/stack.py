"""DevStack: the embedded PostgreSQL and broker behind ``ledger dev up | down | status | env``.

When ``DATABASE_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` is set, that server is used as it is and
nothing is started or stopped for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.settings import Settings
from ops.devstack.broker import EmbeddedBroker
from ops.devstack.ports import port_answers
from ops.devstack.postgres import EmbeddedPostgres


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: str
    url: str
    managed: bool  # started by `dev up` (True) or configured from outside (False)
    running: bool
    pid: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StackState:
    postgres: ServiceState
    kafka: ServiceState
    notes: list[str] = field(default_factory=list)


class DevStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        home = settings.ledger_home.resolve()
        self.postgres = EmbeddedPostgres(home / "pgdata", settings.dev_postgres_port)
        self.broker = EmbeddedBroker(home, settings.dev_kafka_port)

    @property
    def manages_postgres(self) -> bool:
        return self.settings.database_url is None

    @property
    def manages_kafka(self) -> bool:
        return self.settings.kafka_bootstrap_servers is None

    @property
    def database_url(self) -> str:
        return self.settings.database_url or self.postgres.dsn

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.settings.kafka_bootstrap_servers or self.broker.bootstrap_servers

    def up(self) -> None:
        """Start what is not configured from outside; a second call finds them running."""
        if self.manages_postgres:
            self.postgres.start()
        if self.manages_kafka:
            self.broker.start()

    def down(self) -> None:
        """Stop only what ``up`` started."""
        if self.manages_kafka:
            self.broker.stop()
        if self.manages_postgres:
            self.postgres.stop()

    def state(self) -> StackState:
        if self.manages_postgres:
            pg_pid = self.postgres.pid()
            pg = ServiceState("postgres", self.database_url, True, pg_pid is not None, pg_pid)
        else:
            pg = ServiceState("postgres", _redact(self.database_url), False, True)
        if self.manages_kafka:
            kafka_pid = self.broker.pid()
            running = kafka_pid is not None and port_answers(self.broker.port)
            kafka = ServiceState("kafka", self.kafka_bootstrap_servers, True, running, kafka_pid)
        else:
            kafka = ServiceState("kafka", self.kafka_bootstrap_servers, False, True)
        return StackState(pg, kafka)

    def env_exports(self) -> str:
        return (
            f"export DATABASE_URL='{self.database_url}'\n"
            f"export KAFKA_BOOTSTRAP_SERVERS='{self.kafka_bootstrap_servers}'\n"
        )


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
