"""AlertRelay: publishes the budget thresholds crossed as ``budget.threshold_crossed`` events.

The usage projection inserts each crossing into ``budget_alerts`` in the transaction that
moved spend across it (once per scope, period and threshold: the primary key), and
NOTIFYs ``ledger_budget_alert``. This relay, run by ``ledger project`` next to the usage
runner, is the outbox's other half: it publishes the rows not yet published to TOPIC_ALERTS
and then marks them. A crash between the two re-publishes a row with the same event_id,
so an alerting consumer sees at most a duplicate it can drop, never a second alert with
another identity and never none. Rows are claimed FOR UPDATE SKIP LOCKED, so several
projector processes can run relays side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ledger.codec import dump_event
from ledger.db import DatabaseConnectError, connect
from ledger.events import BudgetThresholdCrossed
from ledger.routing import event_headers, partition_key
from ledger.settings import Settings
from projections.outage import is_outage
from projections.storage import ALERT_CHANNEL

log = logging.getLogger("ledger.projector")

_BATCH = 500
_POLL_S = 5.0  # also without a notification: one lost while disconnected is found here
_RETRY_S = 2.0
_CLAIM = """SELECT scope, period, period_start, threshold, limit_usd, spent, event_id, crossed_at
FROM budget_alerts WHERE published_at IS NULL ORDER BY crossed_at
LIMIT $1 FOR UPDATE SKIP LOCKED"""
_MARK = "UPDATE budget_alerts SET published_at = now() WHERE event_id = ANY($1::uuid[])"


def _waited_out(exc: BaseException) -> bool:
    """The brokers or PostgreSQL away: the relay retries. Not a setting that is wrong (a
    ``DatabaseSettingsError``: an option asyncpg refuses, a rejected password, an unknown
    database): ``ledger.db.connect`` decides that by ``server_away``, the rule the runners
    retry by, so the relay raises it and the worker stops as it does for a runner."""
    if isinstance(exc, DatabaseConnectError):
        return exc.retriable
    return isinstance(exc, KafkaError | OSError) or is_outage(exc)


def alert_event(row: asyncpg.Record) -> BudgetThresholdCrossed:
    return BudgetThresholdCrossed(
        event_id=row["event_id"], occurred_at=row["crossed_at"], source="ledger-projector",
        scope=row["scope"], period=row["period"], period_start=row["period_start"],
        threshold=row["threshold"], limit_usd=row["limit_usd"], spent_usd=row["spent"])


class AlertRelay:
    def __init__(self, settings: Settings, *, dsn: str, bootstrap_servers: str) -> None:
        self._settings = settings
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._relay(stop)
            except Exception as exc:
                if not _waited_out(exc):
                    raise
                log.warning("alert relay: %s: %s; retrying in %.0fs", type(exc).__name__, exc,
                            _RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_S)

    async def _relay(self, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        conn = await connect(self._dsn, self._settings)
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        try:
            await conn.add_listener(ALERT_CHANNEL, lambda *_: wake.set())
            await producer.start()
            while not stop.is_set():
                while await self._publish_batch(conn, producer) == _BATCH:
                    pass
                wake.clear()
                stopping = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                await asyncio.wait({stopping, woken}, timeout=_POLL_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                woken.cancel()
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _publish_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        async with conn.transaction():
            rows = await conn.fetch(_CLAIM, _BATCH)
            if not rows:
                return 0
            events = [alert_event(row) for row in rows]
            sent = [await producer.send(self._settings.topic_alerts, dump_event(event),
                                        key=partition_key(event), headers=event_headers(event))
                    for event in events]
            await asyncio.gather(*sent)  # acknowledged by the broker before they are marked
            await conn.execute(_MARK, [event.event_id for event in events])
        self.published += len(rows)
        return len(rows)
