"""Settings read from the environment, with the names gateway operators already use.

Durations accept ``300ms``, ``90s``, ``5m``, ``1h`` (or a bare number of seconds). A bad value
raises :class:`SettingsError` whose message is one line naming the variable and what is accepted.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.db import check_postgres_url, redact_url
from ledger.exceptions import SettingsError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
DURATION_HELP = "a duration such as 300ms, 90s, 5m or 1h"


def parse_duration(value: Any) -> timedelta:
    """``"5m"`` -> ``timedelta(minutes=5)``; timedeltas and plain numbers (seconds) pass through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    amount, unit = match.groups()
    return timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

# Settings whose plain name another program in the same environment may own: the LiteLLM
# proxy takes DATABASE_URL for its own database. ``LEDGER_<NAME>`` is read first.
PREFIXED_FIELDS = ("database_url", "kafka_bootstrap_servers", "spool_dir")


def _prefixed_first(field: str) -> AliasChoices:
    return AliasChoices(f"ledger_{field}", field)


def variable_name(field: str) -> str:
    """The environment variable a setting is read from, for messages.

    A prefixed setting (``PREFIXED_FIELDS``) comes from ``LEDGER_<NAME>`` when that is in
    the environment (it wins), else from ``<NAME>``; pydantic's error location names the
    first alias whichever was set. ``field`` is the field or one of its aliases.
    """
    prefixed = {f"ledger_{name}": name for name in PREFIXED_FIELDS}
    name = prefixed.get(field.lower(), field.lower())
    if name in PREFIXED_FIELDS and f"LEDGER_{name.upper()}" in {k.upper() for k in os.environ}:
        return f"LEDGER_{name.upper()}"
    return name.upper()


class Settings(BaseSettings):
    """Every setting the ledger reads; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", frozen=True
    )

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset means the embedded dev stack",
        validation_alias=_prefixed_first("database_url"),
    )
    db_max_open_conns: int = Field(default=25, ge=1, description="pool max size")
    db_max_idle_conns: int = Field(default=5, ge=0, description="pool min size")
    db_conn_max_lifetime: Duration = Field(
        default=timedelta(minutes=5), description="connections are recycled after this"
    )
    db_conn_max_idle_time: Duration = Field(
        default=timedelta(minutes=1), description="idle connections are closed after this"
    )
    # Nothing waits forever on PostgreSQL. The read models' hot path has client-side limits
    # (a server that stopped answering cannot cancel anything); workers, rebuild and the CLI
    # run with a server-side statement_timeout, where 0 means none.
    db_connect_timeout: Duration = Field(
        default=timedelta(seconds=5), gt=timedelta(0), description="connecting gives up after this"
    )
    db_acquire_timeout: Duration = Field(
        default=timedelta(seconds=1), gt=timedelta(0),
        description="read models: waiting for a pool connection gives up after this",
    )
    db_command_timeout: Duration = Field(
        default=timedelta(seconds=2), gt=timedelta(0),
        description="read models: a query gives up after this",
    )
    db_statement_timeout: Duration = Field(
        default=timedelta(seconds=60), description="projector, rebuild, CLI; 0 means none"
    )
    db_migrate_statement_timeout: Duration = Field(
        default=timedelta(minutes=15), description="ledger migrate; 0 means none"
    )
    authorize_on_db_error: Literal["deny", "allow"] = Field(
        default="deny", description="authorize() when PostgreSQL cannot answer: fail closed/open"
    )
    budget_hold_ttl: Duration = Field(
        default=timedelta(minutes=10), gt=timedelta(0),
        description="a budget reservation (hold) a gateway never settled or released "
                    "gives its amount back when its lease expires, between this and twice "
                    "this after it was taken")

    cache_api_key_size: int = Field(default=1000, ge=1)
    cache_api_key_ttl: Duration = Field(default=timedelta(minutes=5))
    cache_api_key_negative_ttl: Duration = Field(
        default=timedelta(seconds=5), description="TTL of 'no such key' answers"
    )
    cache_model_size: int = Field(default=500, ge=1)
    cache_model_ttl: Duration = Field(default=timedelta(minutes=15))

    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the embedded dev stack",
        validation_alias=_prefixed_first("kafka_bootstrap_servers"),
    )
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", description="compression of the batches the producer sends"
    )
    topic_usage: str = Field(default="ledger.usage", min_length=1)
    topic_keys: str = Field(default="ledger.keys", min_length=1)
    topic_catalog: str = Field(default="ledger.catalog", min_length=1)
    topic_alerts: str = Field(default="ledger.alerts", min_length=1,
                              description="budget.threshold_crossed events, for alerting")
    topic_usage_partitions: int = Field(default=12, ge=1)
    topic_keys_partitions: int = Field(default=3, ge=1)
    topic_catalog_partitions: int = Field(default=1, ge=1)
    topic_alerts_partitions: int = Field(default=1, ge=1)
    # Rebuilds replay the whole log, so topics keep everything (-1) unless told otherwise.
    topic_retention_ms: int = Field(default=-1, ge=-1, description="-1 keeps records forever")
    topic_replication_factor: int = Field(default=1, ge=1, description="1 for the embedded stack")
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    consumer_group: str = Field(default="ledger-projector", min_length=1)
    # How long a worker that stopped heartbeating (kill -9, a frozen host) keeps its partitions
    # before the group gives them to the others. Apache Kafka refuses less than its
    # group.min.session.timeout.ms (6 s by default).
    consumer_session_timeout: Duration = Field(
        default=timedelta(seconds=10), ge=timedelta(seconds=6), le=timedelta(minutes=30),
        description="a silent worker's partitions move to the others after this",
    )

    ledger_home: Path = Field(
        default=Path(".ledger"), description="state of the embedded stack and the spool"
    )
    spool_dir: Path | None = Field(
        default=None, description="producer spool; default LEDGER_HOME/spool",
        validation_alias=_prefixed_first("spool_dir"),
    )
    dev_postgres_port: int = Field(default=55432, ge=1, le=65535)
    dev_kafka_port: int = Field(default=59092, ge=1, le=65535)

    @field_validator("topic_min_insync_replicas")
    @classmethod
    def _insync_within_replicas(cls, value: int, info: ValidationInfo) -> int:
        replicas = info.data.get("topic_replication_factor")
        if replicas is not None and value > replicas:
            # A topic that can never have enough replicas in sync refuses every acks=all write.
            raise ValueError(f"must not exceed TOPIC_REPLICATION_FACTOR ({replicas})")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_postgres_url(value)
        return value

    @property
    def resolved_spool_dir(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.ledger_home / "spool"

    @property
    def pool_max_lifetime_seconds(self) -> float:
        return self.db_conn_max_lifetime.total_seconds()

    def environment(self) -> dict[str, str]:
        """These settings as environment variables, so a child process reads the same."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, timedelta):
                value = f"{value.total_seconds()}s"
            env[name.upper()] = str(value)
            if name in PREFIXED_FIELDS:
                # The prefixed name wins when both are set: a child must not read a stale one.
                env[f"LEDGER_{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; turn pydantic's error into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        variable = variable_name(str(error["loc"][0])) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = error.get("input")
        if variable.endswith("DATABASE_URL") and isinstance(shown, str):
            shown = redact_url(shown)  # never print a password
        parts.append(f"{variable}: {message} (got {shown!r})")
    return "invalid setting " + "; ".join(parts)
