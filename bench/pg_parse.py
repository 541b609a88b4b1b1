"""The "let PostgreSQL parse the JSON" lever, measured (a script, not a test; not in make bench).

    .venv/bin/python bench/pg_parse.py [--events 100000]

In one run on the same events: Python decoding them (``parse_event``, what a worker and a
rebuild do per event today) against PostgreSQL doing the equivalent work in bulk: COPY the
raw bodies into a staging table as text, then one INSERT ... SELECT that extracts every
column with jsonb operators into an unindexed copy of usage_records. The PostgreSQL side
does NOT validate like the model does (patterns, bounds, cross-field rules, upcasting):
this measures the ceiling of that lever, not a replacement for the decoder.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
from projector import gateway_traffic
from scratch_db import migrated_database

from ledger.codec import dump_event, parse_event

_EXTRACT = """
INSERT INTO parsed
SELECT (j->>'event_id')::uuid, (j->>'occurred_at')::timestamptz, j->>'request_id',
       (j->>'api_key_id')::uuid, j->>'model', j->>'requested_model', j->>'provider',
       (j->>'prompt_tokens')::bigint, (j->>'completion_tokens')::bigint,
       (j->>'cache_read_input_tokens')::bigint, (j->>'cache_creation_input_tokens')::bigint,
       (j->>'reasoning_tokens')::bigint, (j->>'audio_input_tokens')::bigint,
       (j->>'audio_output_tokens')::bigint, (j->>'images')::bigint,
       (j->>'input_seconds')::numeric, (j->>'output_seconds')::numeric,
       (j->>'characters')::bigint, (j->>'latency_ms')::bigint, j->>'status', j->>'error_code',
       (j->>'cost_usd')::numeric, 'emitter', coalesce(j->'metadata', '{}'), j->>'source'
FROM raw, LATERAL (SELECT body::jsonb AS j OFFSET 0) s  -- OFFSET 0: parse once, not per column
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    bodies = [dump_event(e) for e in gateway_traffic(args.events)]
    started = time.perf_counter()
    for body in bodies:
        parse_event(body)
    python_s = time.perf_counter() - started
    async with migrated_database("bench-pgparse-") as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TEMP TABLE raw (body text)")
        await conn.execute("CREATE TEMP TABLE parsed AS SELECT event_id, occurred_at, request_id,"
                           " api_key_id, model, requested_model, provider, prompt_tokens,"
                           " completion_tokens, cache_read_input_tokens,"
                           " cache_creation_input_tokens, reasoning_tokens, audio_input_tokens,"
                           " audio_output_tokens, images, input_seconds, output_seconds,"
                           " characters, latency_ms, status, error_code, cost_usd, cost_source,"
                           " metadata, source FROM usage_records WITH NO DATA")
        started = time.perf_counter()
        await conn.copy_records_to_table("raw", records=[(b.decode(),) for b in bodies])
        copied_s = time.perf_counter() - started
        await conn.execute(_EXTRACT)
        pg_s = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("INSERT INTO parsed SELECT r.* FROM raw, "
                           "jsonb_populate_record(NULL::parsed, raw.body::jsonb) r")
        populate_s = time.perf_counter() - started + copied_s
        await conn.close()
    n = len(bodies)
    print(f"{n:,} events: Python parse_event {python_s / n * 1e6:.1f} us/event "
          f"({n / python_s:,.0f}/s); PostgreSQL COPY of the raw text + jsonb extraction "
          f"{pg_s / n * 1e6:.1f} us/event ({n / pg_s:,.0f}/s; the COPY alone "
          f"{copied_s / n * 1e6:.1f} us/event); with jsonb_populate_record instead "
          f"{populate_s / n * 1e6:.1f} us/event ({n / populate_s:,.0f}/s)")


if __name__ == "__main__":
    asyncio.run(main())
