"""Benchmark of LedgerProducer: emit overhead per call and throughput (a script, not a test).

    .venv/bin/python bench/producer.py                    # private embedded broker
    .venv/bin/python bench/producer.py --bootstrap host:9092 --events 500000

Three phases, each on fresh topics:

* ``emit``: events built beforehand; each ``await producer.emit(event)`` is timed alone
  (p50/p99 in microseconds), then ``flush`` waits for every acknowledgement. Throughput is
  events / (time of all emits + flush): what the producer itself sustains.
* ``build+emit``: the gateway path, ``producer.events.usage(...)`` (uuid4, timestamp,
  validation) then ``emit`` for each event, plus flush.
* ``spool``: the broker is unreachable: every event is fsynced to the spool instead; each
  emit is timed too (it only enqueues; the sender task appends and fsyncs per batch).

``--compression`` (none, gzip, snappy, lz4, zstd) applies to every phase.

Prints a JSON document and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.events import UsageRecorded
from ledger.producer import LedgerProducer
from ledger.routing import Topics
from ledger.topics import TopicSpec, ensure_topics
from ops.devstack import EmbeddedBroker
from ops.devstack.ports import free_port


@contextmanager
def broker_for(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as root:
        broker = EmbeddedBroker(Path(root), free_port())
        broker.start()
        try:
            yield broker.bootstrap_servers
        finally:
            broker.stop()


async def fresh_topics(bootstrap: str, partitions: int) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"bench-usage-{suffix}", f"bench-keys-{suffix}", f"bench-catalog-{suffix}")
    await ensure_topics(bootstrap, [TopicSpec(name, partitions)
                                    for name in (topics.usage, topics.keys, topics.catalog)])
    return topics


def percentile(sorted_values: list[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(len(sorted_values) * fraction))
    return sorted_values[index] / 1000  # ns -> us


def build_usage(producer: LedgerProducer, key_ids: list[uuid.UUID], number: int) -> UsageRecorded:
    return producer.events.usage(
        api_key_id=key_ids[number % len(key_ids)],
        request_id=f"req-{number}",
        model="gpt-4o-mini",
        provider="openai",
        prompt_tokens=1200,
        completion_tokens=350,
        cache_read_input_tokens=1024,
        latency_ms=840,
        metadata={"team": "search"},
    )


def producer_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "linger_ms": args.linger_ms,
        "max_batch_size": args.max_batch_size,
        "max_pending": args.max_pending,
        # None rather than "none": older producers only knew aiokafka's spelling.
        "compression_type": None if args.compression == "none" else args.compression,
    }


async def run_emit(args: argparse.Namespace, bootstrap: str, build_inline: bool) -> dict[str, Any]:
    topics = await fresh_topics(bootstrap, args.partitions)
    key_ids = [uuid.uuid4() for _ in range(args.keys)]
    async with LedgerProducer(bootstrap, topics=topics, **producer_options(args)) as producer:
        await producer.emit_and_wait(build_usage(producer, key_ids, -1))  # connect, metadata
        events = (
            [] if build_inline else [build_usage(producer, key_ids, n) for n in range(args.events)]
        )
        gc.collect()
        gc.freeze()  # the prebuilt events are scaffolding: keep them out of GC scans
        if args.no_gc:
            gc.disable()
        latencies = [0] * args.events
        clock = time.perf_counter_ns
        cpu_started = time.process_time()
        started = time.perf_counter()
        if build_inline:
            for number in range(args.events):
                event = build_usage(producer, key_ids, number)
                before = clock()
                await producer.emit(event)
                latencies[number] = clock() - before
        else:
            for number, event in enumerate(events):
                before = clock()
                await producer.emit(event)
                latencies[number] = clock() - before
        emitted = time.perf_counter()
        await producer.flush()
        finished = time.perf_counter()
        cpu_used = time.process_time() - cpu_started
    latencies.sort()
    return {
        "phase": "build+emit" if build_inline else "emit",
        "events": args.events,
        "emit_p50_us": round(percentile(latencies, 0.50), 2),
        "emit_p99_us": round(percentile(latencies, 0.99), 2),
        "emit_mean_us": round(statistics.fmean(latencies) / 1000, 2),
        "throughput_events_per_s": round(args.events / (finished - started)),
        "emit_loop_s": round(emitted - started, 3),
        "flush_s": round(finished - emitted, 3),
        # CPU of this process only (the broker runs beside it on the same cores).
        "producer_cpu_us_per_event": round(cpu_used / args.events * 1e6, 2),
    }


async def run_spool(args: argparse.Namespace) -> dict[str, Any]:
    key_ids = [uuid.uuid4() for _ in range(args.keys)]
    count = min(args.events, 100_000)
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as spool_dir:
        # Port 1 has no broker: every record goes to the fsynced spool.
        producer = LedgerProducer(
            "127.0.0.1:1", spool_dir=spool_dir, close_timeout_s=0.5, **producer_options(args)
        )
        async with producer:
            events = [build_usage(producer, key_ids, n) for n in range(count)]
            latencies = [0] * count
            clock = time.perf_counter_ns
            started = time.perf_counter()
            for number, event in enumerate(events):
                before = clock()
                await producer.emit(event)
                latencies[number] = clock() - before
            await producer.flush()
            finished = time.perf_counter()
    latencies.sort()
    return {
        "phase": "spool (broker down)",
        "events": count,
        "emit_p50_us": round(percentile(latencies, 0.50), 2),
        "emit_p99_us": round(percentile(latencies, 0.99), 2),
        "throughput_events_per_s": round(count / (finished - started)),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| phase | events | emit p50 (us) | emit p99 (us) | events/s | producer CPU us/event |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['phase']} | {result['events']} | {result.get('emit_p50_us', '-')} "
            f"| {result.get('emit_p99_us', '-')} | {result['throughput_events_per_s']} "
            f"| {result.get('producer_cpu_us_per_event', '-')} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = []
    # A fresh embedded broker per run: its memory storage slows down as it fills, which
    # would make later runs measure the broker's growth rather than the producer.
    for build_inline in [False] * args.repeat + [True]:
        with broker_for(args.bootstrap) as bootstrap:
            results.append(await run_emit(args, bootstrap, build_inline=build_inline))
    if not args.skip_spool:
        results.append(await run_spool(args))
    report = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "options": {key: value for key, value in vars(args).items() if key != "bootstrap"},
        "broker": "external" if args.bootstrap else "embedded Tansu (memory storage)",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    print()
    print(markdown(results))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="use this broker instead of a private embedded one")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1_000, help="distinct api_key_ids")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--max-batch-size", type=int, default=512 * 1024)
    parser.add_argument("--max-pending", type=int, default=100_000)
    parser.add_argument("--compression", default="none",
                        choices=["none", "gzip", "snappy", "lz4", "zstd"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of the emit phase")
    parser.add_argument("--skip-spool", action="store_true")
    parser.add_argument("--no-gc", action="store_true", help="experiment: GC off while timing")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
