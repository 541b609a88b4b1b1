"""The peer: the ``eventsourcing`` library's PostgreSQL tracking-record projection.

The pattern its documentation gives for a materialised view: an event-sourced application
stores the events in PostgreSQL, a ``ProjectionRunner`` subscribes to its notification log,
and for each event the view updates its table and inserts the tracking record in one
transaction (``PostgresTrackingRecorder._insert_tracking``), which makes it exactly once.
Here the view does the same monthly summary upsert as this ledger (requests, tokens, cost per
key, model and month). It keeps no per-event record and no dedup table, so it does less
work per event than the ledger's projector. Used by bench/projector.py only; ``eventsourcing``
is a ``bench`` extra, not a runtime dependency.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from functools import singledispatchmethod
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from psycopg.sql import SQL

from ledger.events import UsageRecorded

_CREATE_VIEW = """
CREATE TABLE IF NOT EXISTS peer_monthly_summaries (
    api_key_id text NOT NULL, model text NOT NULL, month text NOT NULL,
    requests bigint NOT NULL, prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL,
    cost_usd numeric NOT NULL, PRIMARY KEY (api_key_id, month, model))
"""
_UPSERT = """
INSERT INTO peer_monthly_summaries AS s VALUES (%s, %s, %s, 1, %s, %s, %s)
ON CONFLICT (api_key_id, month, model) DO UPDATE SET
    requests = s.requests + 1, prompt_tokens = s.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = s.completion_tokens + EXCLUDED.completion_tokens,
    cost_usd = s.cost_usd + EXCLUDED.cost_usd
"""


class Request(Aggregate):
    """One gateway request; its creation event is the usage event."""

    def __init__(self, api_key_id: str, model: str, month: str, prompt_tokens: int,
                 completion_tokens: int, cost_usd: Decimal) -> None:
        self.api_key_id, self.model, self.month = api_key_id, model, month
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens
        self.cost_usd = cost_usd


class Gateway(Application[Any]):
    """The event store the projection follows."""


class SpendView(PostgresTrackingRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.append(SQL(_CREATE_VIEW))  # type: ignore[arg-type]

    def add(self, event: Any, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(_UPSERT, (event.api_key_id, event.model, event.month,
                                   event.prompt_tokens, event.completion_tokens, event.cost_usd),
                         prepare=True)
            self._insert_tracking(curs, tracking)

    def totals(self) -> tuple[int, int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT coalesce(sum(requests), 0)::bigint AS n, "
                         "count(*) AS groups FROM peer_monthly_summaries")
            row = curs.fetchone()
            assert row is not None
            return int(row["n"]), int(row["groups"])


class SpendProjection(Projection[SpendView]):
    name = "spend"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.add(domain_event, tracking)


def environment(dsn: str) -> dict[str, str]:
    parts = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"), "POSTGRES_HOST": parts.hostname or "",
        "POSTGRES_PORT": str(parts.port or 5432), "POSTGRES_USER": parts.username or "",
        "POSTGRES_PASSWORD": parts.password or "", "CREATE_TABLE": "y",
    }


def run_peer(dsn: str, events: Sequence[UsageRecorded], timeout_s: float = 600) -> dict[str, Any]:
    """Store ``events`` (untimed), then time the projection from the first event to the last."""
    env = environment(dsn)
    app = Gateway(env)
    unique = list({e.event_id: e for e in events}.values())  # the store holds each event once
    for start in range(0, len(unique), 1000):
        app.save(*(Request(str(e.api_key_id), e.model, e.occurred_at.strftime("%Y-%m"),
                           e.prompt_tokens, e.completion_tokens, e.cost_usd or Decimal(0))
                   for e in unique[start:start + 1000]))
    last = app.recorder.max_notification_id()
    app.close()
    started = time.perf_counter()
    with ProjectionRunner(application_class=Gateway, projection_class=SpendProjection,
                          view_class=SpendView, env=env) as runner:
        runner.wait(last, timeout=timeout_s)
        elapsed = time.perf_counter() - started
        requests, groups = runner.view.totals()
    assert requests == len(unique), (requests, len(unique))
    return {"events": len(unique), "summary_rows": groups,
            "events_per_s": round(len(unique) / elapsed)}
