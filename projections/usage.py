"""UsageProjection: usage_records and monthly_usage_summaries, set-based.

Per batch: COPY the events into a session temp table; claim their event_ids in
usage_event_ids (ON CONFLICT DO NOTHING: the dedup); insert only the claimed ones into
usage_records; add only the rows actually inserted to the monthly summaries — all in one
statement, inside the runner's transaction. A copy whose event_id was claimed with another
payload (fingerprint) is a ``conflicting_duplicate`` dead letter; the first copy stays.

Poison never stops the batch: if the set-based statement fails for any reason but a
database outage, each event is applied alone in a savepoint and the ones that fail become
dead letters with their error.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

import asyncpg

from ledger.codec import dump_usage
from ledger.events import UsageRecorded
from ledger.invalidation import Invalidation, merge
from ledger.settings import Settings
from projections import budgets
from projections.base import ApplyResult, Envelope, Failure, Projection, lock_key
from projections.outage import is_outage
from projections.pricer import CatalogPricer
from projections.repricing import PRICING_LOCK

_COLUMNS = (
    "event_id", "occurred_at", "request_id", "api_key_id", "model", "requested_model",
    "provider", "prompt_tokens", "completion_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "reasoning_tokens", "audio_input_tokens",
    "audio_output_tokens", "images", "output_images", "input_seconds", "output_seconds",
    "characters", "latency_ms", "status", "error_code", "cost_usd", "cost_source", "metadata",
    "source", "service_tier", "data_residency", "vertex_location", "inference_geo",
)
_STAGE_COLUMNS = (*_COLUMNS, "fingerprint", "hold_estimate", "hold_leases")
_COUNTERS = (
    "prompt_tokens", "completion_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "reasoning_tokens", "audio_input_tokens",
    "audio_output_tokens", "images", "output_images", "input_seconds", "output_seconds",
    "characters",
)

# Staged as text and cast in the statement: metadata, because asyncpg's binary COPY has no
# jsonb encoder for dicts; the numerics, because asyncpg's binary numeric encoder costs about
# 6 us per Decimal here (COPY of a 10,000-row batch: 31 us per row with Decimals against 15
# with their str(), conversion included). str(Decimal) is exact, and so is numeric's input.
_NUMERIC_STAGED_AS_TEXT = ("input_seconds", "output_seconds", "cost_usd", "hold_estimate")
_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS usage_stage (
    event_id uuid, occurred_at timestamptz, request_id text, api_key_id uuid, model text,
    requested_model text, provider text, prompt_tokens bigint, completion_tokens bigint,
    cache_read_input_tokens bigint, cache_creation_input_tokens bigint, reasoning_tokens bigint,
    audio_input_tokens bigint, audio_output_tokens bigint, images bigint, output_images bigint,
    input_seconds text, output_seconds text, characters bigint, latency_ms bigint, status text,
    error_code text, cost_usd text, cost_source text, metadata text, source text,
    service_tier text, data_residency text, vertex_location text, inference_geo text,
    fingerprint bytea, hold_estimate text, hold_leases uuid[]
) ON COMMIT DELETE ROWS
"""
# The staged row with its own types back: what the rest of the statement reads.
_CLAIMED_COLUMNS = ", ".join(
    f"s.{c}::numeric AS {c}" if c in _NUMERIC_STAGED_AS_TEXT else f"s.{c}"
    for c in _STAGE_COLUMNS)

_INSERTED_AND_SUMMED = f"""
WITH fresh AS (
    INSERT INTO usage_event_ids (event_id, occurred_at, fingerprint)
    SELECT event_id, occurred_at, fingerprint FROM usage_stage
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), conflicting AS (
    -- Already claimed by an earlier batch with another payload. The statement's snapshot
    -- predates its own inserts, so only earlier claims are seen; re-sent copies (the usual
    -- duplicate) carry the same fingerprint and stay silent.
    SELECT s.event_id FROM usage_stage s JOIN usage_event_ids u ON u.event_id = s.event_id
    WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.event_id = s.event_id)
      AND u.fingerprint IS DISTINCT FROM s.fingerprint AND u.fingerprint IS NOT NULL
), claimed AS MATERIALIZED (
    SELECT {_CLAIMED_COLUMNS} FROM usage_stage s JOIN fresh f ON f.event_id = s.event_id
), inserted AS (
    -- The claim above is the dedup; usage_records' own key can no longer conflict.
    INSERT INTO usage_records ({", ".join(_COLUMNS)})
    SELECT {", ".join(c if c != "metadata" else "metadata::jsonb" for c in _COLUMNS)}
    FROM claimed
), summed AS (
    SELECT api_key_id, model,
           (date_trunc('month', occurred_at AT TIME ZONE 'UTC'))::date AS month,
           max(provider) AS provider,
           count(*) AS requests,
           count(*) FILTER (WHERE status = 'error') AS errors,
           {", ".join(f"sum({c}) AS {c}" for c in _COUNTERS)},
           coalesce(sum(cost_usd), 0) AS cost_usd,
           count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced_requests,
           min(occurred_at) AS first_occurred_at,
           max(occurred_at) AS last_occurred_at
    FROM claimed
    GROUP BY 1, 2, 3
), upserted AS (
    INSERT INTO monthly_usage_summaries AS s (
        api_key_id, model, month, provider, requests, errors, {", ".join(_COUNTERS)},
        cost_usd, unpriced_requests, first_occurred_at, last_occurred_at)
    SELECT api_key_id, model, month, provider, requests, errors, {", ".join(_COUNTERS)},
           cost_usd, unpriced_requests, first_occurred_at, last_occurred_at
    FROM summed
    ON CONFLICT (api_key_id, month, model) DO UPDATE SET
        provider = coalesce(EXCLUDED.provider, s.provider),
        requests = s.requests + EXCLUDED.requests,
        errors = s.errors + EXCLUDED.errors,
        {", ".join(f"{c} = s.{c} + EXCLUDED.{c}" for c in _COUNTERS)},
        cost_usd = s.cost_usd + EXCLUDED.cost_usd,
        unpriced_requests = s.unpriced_requests + EXCLUDED.unpriced_requests,
        first_occurred_at = least(s.first_occurred_at, EXCLUDED.first_occurred_at),
        last_occurred_at = greatest(s.last_occurred_at, EXCLUDED.last_occurred_at),
        updated_at = now()
    RETURNING api_key_id
)<budget ctes>
SELECT (SELECT count(*) FROM claimed) AS inserted,
       (SELECT array_agg(DISTINCT api_key_id::text) FROM upserted) AS key_ids,
       (SELECT array_agg(event_id) FROM conflicting) AS conflicting<budget result>
"""
# Live batches also move budget spend and settle holds (projections.budgets); a rebuild's
# replay does not (its swap recomputes budget spend from the rebuilt records).
_LIVE_STATEMENT = _INSERTED_AND_SUMMED.replace("<budget ctes>", budgets.SPEND_CTES).replace(
    "<budget result>", budgets.SPEND_RESULT)
_REPLAY_STATEMENT = _INSERTED_AND_SUMMED.replace("<budget ctes>", "").replace(
    "<budget result>", "")


# Children of the usage_records that search_path resolves to (a rebuild's scratch copy too).
_MISSING_PARTITIONS = """
SELECT array_agg(n) FROM unnest($1::text[]) n
WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'usage_records'::regclass AND c.relname = n)
"""


def month_start(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def _months(batch: list[Envelope]) -> set[datetime]:
    """The months a batch's events fall in; one set of (year, month) pairs, then datetimes
    (month_start per event cost more than the rest of prepare)."""
    seen = set()
    for envelope in batch:
        moment = envelope.event.occurred_at
        if moment.utcoffset():
            moment = moment.astimezone(UTC)
        seen.add((moment.year, moment.month))
    return {datetime(year, month, 1, tzinfo=UTC) for year, month in seen}


def partition_name(month: datetime) -> str:
    return f"usage_records_y{month.year:04d}m{month.month:02d}"


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(
        month=month.month + 1)


class UsageProjection(Projection):
    name = "usage"
    # A rebuild prices against the live catalog: catalog changes wait until it swapped in,
    # since their re-pricing only reaches the live tables (projections.repricing).
    replay_locks = (PRICING_LOCK,)
    # The batch statement inserts into usage_records without ON CONFLICT (the dedup is the
    # usage_event_ids claim) and reads it nowhere: its three indexes can wait for the end.
    rebuild_deferred_indexes = ("usage_records",)

    def __init__(self) -> None:
        self._pricer = CatalogPricer()
        self._staged_on: asyncpg.Connection | None = None

    def topic(self, settings: Settings) -> str:
        return settings.topic_usage

    def tables(self) -> tuple[str, ...]:
        return ("usage_event_ids", "usage_records", "monthly_usage_summaries")

    async def after_swap(self, conn: asyncpg.Connection) -> None:
        """The rebuilt records are live now: budget spend follows them (holds and alerts,
        which are live state, stay as they are; an alert already sent is not sent again)."""
        await budgets.recompute(conn, None)

    async def prepare(self, conn: asyncpg.Connection, batch: list[Envelope]) -> None:
        """Create missing monthly partitions, in their own short transaction.

        Existence is asked each batch (one round trip) rather than cached, because a rebuild
        may swap the partitioned table underneath this worker.
        """
        if self._staged_on is not conn:
            # Here, outside every transaction, so no rollback can take the table away while
            # we believe it exists (a temp table lives as long as its session).
            await conn.execute(_CREATE_STAGE)
            self._staged_on = conn
        months = {partition_name(m): m for m in _months(batch)}
        missing = await conn.fetchval(_MISSING_PARTITIONS, list(months))
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                               lock_key(self.name))
            # Serialise DDL between workers: two concurrent CREATE ... IF NOT EXISTS can race.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('usage_partitions'))")
            for name in sorted(missing):
                month = months[name]
                bounds = f"FROM ('{month.isoformat()}') TO ('{_next_month(month).isoformat()}')"
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF usage_records "
                    f"FOR VALUES {bounds}")

    async def apply(self, conn: asyncpg.Connection, batch: list[Envelope]) -> ApplyResult:
        # The first copy of each id goes into the set-based statement. A later copy in the same
        # batch that says something else is applied alone afterwards, so that the database's
        # first copy (earlier batches, or this one) decides which of them conflicts.
        unique: dict[UUID, tuple[Envelope, UsageRecorded, bytes]] = {}
        later: list[tuple[Envelope, UsageRecorded, bytes]] = []
        for envelope in batch:
            event = envelope.event
            assert isinstance(event, UsageRecorded)  # the decoder only passes usage events
            copy = (envelope, event, fingerprint(event))
            first = unique.setdefault(event.event_id, copy)
            if first is not copy and first[2] != copy[2]:
                later.append(copy)
        failures: list[Failure] = []
        envelopes, rows = await self._rows(conn, [*unique.values(), *later], failures)
        main = len(rows) - sum(1 for e in envelopes if any(e is c[0] for c in later))
        if main <= 0:
            return await self._apply_one_by_one(conn, envelopes, rows, failures)
        try:
            async with conn.transaction():  # a savepoint: poison must not abort the batch
                inserted, key_ids, conflicting = await self._copy_and_upsert(conn, rows[:main])
        except Exception as exc:
            if is_outage(exc):
                raise  # the runner retries the whole batch
            return await self._apply_one_by_one(conn, envelopes, rows, failures)
        failures.extend(_conflict(e) for e in envelopes[:main] if e.event.event_id in conflicting)
        result = await self._apply_one_by_one(conn, envelopes[main:], rows[main:], failures)
        return ApplyResult(inserted + result.applied, merge(
            [Invalidation(spend_key_ids=frozenset(key_ids)), result.invalidation]),
            result.failures)

    async def _rows(
        self, conn: asyncpg.Connection, copies: list[tuple[Envelope, UsageRecorded, bytes]],
        failures: list[Failure],
    ) -> tuple[list[Envelope], list[tuple[Any, ...]]]:
        """Priced rows to stage; an event whose pricing raised becomes a Failure instead."""
        envelopes, rows = [], []
        costs = await self._pricer.costs(conn, [event for _, event, _ in copies])
        for (envelope, event, digest), cost in zip(copies, costs, strict=True):
            if isinstance(cost, Exception):
                failures.append(Failure.of(envelope, "handler_error", f"pricing failed: {cost}"))
                continue
            envelopes.append(envelope)
            rows.append(_row(event, cost, digest))
        return envelopes, rows

    async def _copy_and_upsert(
        self, conn: asyncpg.Connection, rows: list[tuple[Any, ...]]
    ) -> tuple[int, list[str], set[UUID]]:
        await conn.copy_records_to_table("usage_stage", records=rows, columns=_STAGE_COLUMNS)
        result = await conn.fetchrow(_REPLAY_STATEMENT if self.rebuilding else _LIVE_STATEMENT)
        assert result is not None
        return (int(result["inserted"]), list(result["key_ids"] or []),
                set(result["conflicting"] or ()))

    async def _apply_one_by_one(
        self, conn: asyncpg.Connection, envelopes: list[Envelope], rows: list[tuple[Any, ...]],
        failures: list[Failure],
    ) -> ApplyResult:
        """Each event in its own savepoint; the ones that fail become dead letters."""
        inserted, key_ids = 0, set[str]()
        for envelope, row in zip(envelopes, rows, strict=True):
            try:
                async with conn.transaction():
                    await conn.execute("TRUNCATE usage_stage")  # rows clear at commit otherwise
                    count, keys, conflicting = await self._copy_and_upsert(conn, [row])
            except Exception as exc:
                if is_outage(exc):
                    raise
                failures.append(Failure.of(envelope, "handler_error",
                                           f"{type(exc).__name__}: {exc}"))
                continue
            if conflicting:
                failures.append(_conflict(envelope))
            inserted += count
            key_ids.update(keys)
        return ApplyResult(inserted, Invalidation(spend_key_ids=frozenset(key_ids)), failures)


# Fields usage.recorded v3 added. An event that leaves them null says exactly what its v2
# form said, and keeps the fingerprint the v2 projector stored for it: a copy re-sent after
# the upgrade is a duplicate, not a conflicting one.
_V3_FIELDS = frozenset({"service_tier", "data_residency", "vertex_location", "inference_geo"})
# hold_id says which reservation to settle, not what was used: a copy re-sent with or
# without it is the same event, and events from before it existed keep their fingerprint.
_NOT_FINGERPRINTED = {"hold_id"}
_V3_EXCLUDED = {"output_images", *_NOT_FINGERPRINTED}  # v4 added output_images: likewise
_V2_EXCLUDED = {*_V3_FIELDS, *_V3_EXCLUDED}
# How the four v3 fields serialize when all are null, v4's output_images when 0, the
# versions, and hold_id (the model's last field, so its last occurrence is the top-level
# one even if metadata has that key).
# Structural JSON only: inside a string every quote is escaped, so these bytes cannot
# occur within a value, and the first occurrence is the field itself.
_V3_NULLS = (b',"service_tier":null,"data_residency":null,"vertex_location":null,'
             b'"inference_geo":null')
_V4_VERSION, _V3_VERSION, _V2_VERSION = (
    b'"schema_version":4', b'"schema_version":3', b'"schema_version":2')
_NO_OUTPUT_IMAGES = b',"output_images":0'
_HOLD_ID = b',"hold_id":'


def fingerprint(event: UsageRecorded) -> bytes:
    """What an event says, for telling a re-sent copy from another event reusing its id.

    Defined as the digest of the event's JSON without ``hold_id``, in the oldest version
    that says it all: its v3 form (``schema_version`` 3, without ``output_images``) when it
    generated no image, and then its v2 form (``schema_version`` 2, without the v3 fields)
    when the v3 fields are all null too. Both are cut out of the plain JSON rather than
    serialized with ``exclude``: that serialization took ~3x as long, and this runs once per
    event (``fingerprint_by_definition`` is the slow, defining form; a test holds them equal).
    """
    body = dump_usage(event)  # the wire encoding (ledger.codec), the model serializer's bytes
    body = body[:body.rindex(_HOLD_ID)] + b"}"  # drop hold_id, the last field
    if event.output_images == 0:
        body = body.replace(_NO_OUTPUT_IMAGES, b"", 1).replace(_V4_VERSION, _V3_VERSION, 1)
        if (event.service_tier is None and event.data_residency is None
                and event.vertex_location is None and event.inference_geo is None):
            body = body.replace(_V3_NULLS, b"", 1).replace(_V3_VERSION, _V2_VERSION, 1)
    return hashlib.blake2b(body, digest_size=16).digest()


def fingerprint_by_definition(event: UsageRecorded) -> bytes:
    """``fingerprint`` computed the obvious way (for the test that holds the two equal)."""
    serialize = event.__pydantic_serializer__.to_json
    if event.output_images:
        body = serialize(event, exclude=_NOT_FINGERPRINTED)
    elif all(getattr(event, name) is None for name in _V3_FIELDS):
        as_v2 = event.model_copy(update={"schema_version": 2})
        body = serialize(as_v2, exclude=_V2_EXCLUDED, warnings=False)
    else:
        as_v3 = event.model_copy(update={"schema_version": 3})
        body = serialize(as_v3, exclude=_V3_EXCLUDED, warnings=False)
    return hashlib.blake2b(body, digest_size=16).digest()


def _conflict(envelope: Envelope) -> Failure:
    return Failure.of(envelope, "conflicting_duplicate",
                      f"event_id {envelope.event.event_id} was already projected with another "
                      "payload; the first copy is kept")


# The event's fields in _COLUMNS order around cost and metadata, read in one C call each:
# a Python attribute access per column took more than half of building a row.
_LEADING_FIELDS = attrgetter(*_COLUMNS[:_COLUMNS.index("input_seconds")])
_MIDDLE_FIELDS = attrgetter(*_COLUMNS[_COLUMNS.index("output_seconds") + 1:
                                      _COLUMNS.index("cost_usd")])
_TRAILING_FIELDS = attrgetter(*_COLUMNS[_COLUMNS.index("metadata") + 1:])
_NO_HOLD: tuple[None, None] = (None, None)


def _row(event: UsageRecorded, cost: tuple[Any, str], digest: bytes) -> tuple[Any, ...]:
    cost_usd, cost_source = cost
    metadata = event.metadata
    estimate, leases = _NO_HOLD if event.hold_id is None else budgets.hold_columns(event.hold_id)
    return (*_LEADING_FIELDS(event), str(event.input_seconds), str(event.output_seconds),
            *_MIDDLE_FIELDS(event), None if cost_usd is None else str(cost_usd), cost_source,
            json.dumps(metadata) if metadata else "{}", *_TRAILING_FIELDS(event), digest,
            None if estimate is None else str(estimate), leases)
