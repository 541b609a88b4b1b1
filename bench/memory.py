"""Memory of one projector worker over many events (issue 15; a script, not a test).

    .venv/bin/python bench/memory.py [--events 1000000] [--every 10000] [--trace]

Starts a private embedded PostgreSQL and broker (or uses DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS),
then, at the same time:

* a producer process (``--produce``) that builds gateway-like usage events as it goes (Zipf over
  1,000 keys, 1% re-sent duplicates, small payloads) and emits them; no list of events exists
  anywhere, so 10 million fit, and this process stays small too;
* one ``ledger project --projection usage`` process, the real worker path.

Every ``--every`` events the worker has committed (its checkpoints in PostgreSQL), the
worker's resident set is sampled, and the broker's at each tenth of the run (embedded Tansu
keeps the whole topic in memory, so it grows with the run). Prints JSON: the worker's
first/min/max/last RSS in MiB, its RSS at each 10% of the run, the broker's, the events/s
from the worker's first commit to its last, and the producer's own rate (when it is close to
the worker's, the worker was waiting for events rather than the reverse).

At each tenth the worker also reports what it sees from inside (``at_each_tenth[].worker``):
its RSS, glibc's heap in use, free but held, and mapped (``mallinfo2``), and the gc's object
count. ``--trace`` runs it under ``tracemalloc`` too (several times slower; use a few hundred
thousand events): then each report names the allocation sites that grew most since the first.
Allocator settings such as ``MALLOC_ARENA_MAX`` can be compared from the environment: the
worker inherits it.

The broker's resident set grows with what was produced (about 0.8 KiB per event), so 10
million events need about 8 GiB for it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from projector import MODELS, check_totals, scratch_db, settings_for, stack

from ledger.events import UsageRecorded
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs

_APPLIED = ("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_checkpoints "
            "WHERE projection = 'usage'")
_MIB = 1 << 20


def events(n: int) -> Any:
    """``n`` gateway events and 1% re-sent copies, built one at a time (as
    bench/projector.py's gateway_traffic, without holding them)."""
    rng = random.Random(1)
    keys = [uuid.uuid4() for _ in range(1000)]
    weights = list(itertools.accumulate(1 / rank ** 1.1 for rank in range(1, 1001)))
    now = datetime.now(UTC)
    for i in range(n):
        event = UsageRecorded(
            event_id=uuid.uuid4(), occurred_at=now - timedelta(seconds=rng.randrange(3600)),
            source="bench", request_id=f"r{i}",
            api_key_id=rng.choices(keys, cum_weights=weights)[0],
            model=MODELS[(i * 31) % 50 if i % 4 else 0], provider="openai",
            prompt_tokens=100 + i % 900, completion_tokens=20 + i % 300, status="success",
            cost_usd=Decimal(i % 997) / Decimal(10**6))
        yield event
        if i % 100 == 99:
            yield event  # a re-sent duplicate: same event_id, same payload


def total_for(n: int) -> int:
    return n + n // 100


async def produce(n: int, rate: int | None = None) -> None:
    """The producer process: emit as fast as the broker takes them (or at ``rate`` events/s),
    then report the rate."""
    started = time.perf_counter()
    async with LedgerProducer.from_settings(Settings()) as producer:
        for i, event in enumerate(events(n)):
            await producer.emit(event)
            if rate is not None and i % 100 == 0:
                ahead = started + i / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif i % 10_000 == 0:
                await asyncio.sleep(0)  # let the sender drain its acknowledgements
        await producer.flush()
    print(json.dumps({"produced": total_for(n),
                      "events_per_s": round(total_for(n) / (time.perf_counter() - started))}))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def inspected_worker(report_path: str, trace: bool) -> None:
    """``ledger project``; on SIGUSR1 it appends one JSON line to ``report_path``: its RSS,
    what glibc's heap holds in use and free (mallinfo2), the gc's object count and, with
    ``trace``, the allocation sites (tracemalloc) that grew most since the first report."""
    if trace:
        tracemalloc.start(3)  # more frames make the worker much slower still
    first: list[tracemalloc.Snapshot] = []
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    me = psutil.Process()

    def report(*_: Any) -> None:
        heap = libc.mallinfo2()
        line: dict[str, Any] = {
            "rss_mib": me.memory_info().rss // _MIB,
            "malloc_in_use_mib": (heap.uordblks + heap.hblkhd) // _MIB,
            "malloc_free_held_mib": heap.fordblks // _MIB,
            "malloc_mmapped_mib": heap.hblkhd // _MIB,
            "gc_objects": len(gc.get_objects()),
        }
        if trace:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),))
            line["traced_mib"] = tracemalloc.get_traced_memory()[0] // _MIB
            if first:
                line["grew_most"] = [
                    f"{stat.size_diff // 1024:+d} KiB {stat.count_diff:+d} blocks " + " <- ".join(
                        f"{Path(f.filename).name}:{f.lineno}"
                        for f in reversed(stat.traceback))  # innermost first
                    for stat in snapshot.compare_to(first[0], "traceback")[:8]]
            else:
                first.append(snapshot)
        with open(report_path, "a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR1, report)
    # bench/ holds scripts named like the packages (bench/readmodels.py): import the packages.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.argv = ["ledger", "project", "--projection", "usage", "--log-level", "WARNING"]
    from ops.cli import main
    main()


def _rss(pid: int | None) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss // _MIB if pid else None
    except psutil.NoSuchProcess:
        return None


async def measure(n: int, every: int, trace: bool, all_samples: bool,
                  rate: int | None = None) -> dict[str, Any]:
    async with stack() as s, scratch_db(s.dsn) as dsn:
        settings = settings_for(s, dsn)
        await ensure_topics(s.bootstrap, topic_specs(settings))
        env = {**os.environ, **settings.environment(), "LEDGER_HOME": str(Path(s.root) / "home")}
        me = [sys.executable, __file__]
        paced = ["--rate", str(rate)] if rate is not None else []
        producer = subprocess.Popen([*me, "--produce", str(n), *paced], env=env,
                                    stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
        reports = Path(s.root) / "worker-memory.jsonl"
        worker = subprocess.Popen([*me, "--inspected-worker", str(reports),
                                   *(["--trace"] if trace else [])],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        total = total_for(n)
        conn = await asyncpg.connect(dsn)
        samples: list[tuple[int, int]] = []  # (events committed, worker RSS MiB)
        tenths: list[dict[str, Any]] = []
        try:
            while (done := await conn.fetchval(_APPLIED)) == 0:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}")
                await asyncio.sleep(0.05)
            started, first = time.perf_counter(), done
            while True:
                if not samples or done - samples[-1][0] >= every or done >= total:
                    samples.append((done, _rss(worker.pid) or 0))
                if done >= len(tenths) * total / 10 or done >= total:
                    tenths.append({"events": done, "worker_rss_mib": samples[-1][1],
                                   "broker_rss_mib": _rss(s.broker_pid)})
                    worker.send_signal(signal.SIGUSR1)  # the worker's own view
                if done >= total:
                    break
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}")
                await asyncio.sleep(0.05)
                done = await conn.fetchval(_APPLIED)
            elapsed = time.perf_counter() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            produced = producer.communicate(timeout=600)[0]
            await conn.close()
        await check_totals(dsn, n)
        inside = [json.loads(line) for line in reports.read_text().splitlines()
                  ] if reports.exists() else []
        for tenth, seen in zip(tenths, inside, strict=False):
            tenth["worker"] = seen
        rss = [r for _, r in samples]
        return {"events": total, "every": every, "traced": trace, "offered_per_s": rate,
                "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
                "events_per_s": round((done - first) / elapsed),
                "producer": json.loads(produced or b"null"),
                "worker_rss_mib": {"first": rss[0], "min": min(rss), "max": max(rss),
                                   "last": rss[-1], "samples": len(rss)},
                "at_each_tenth": tenths, **({"samples": samples} if all_samples else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="unique events (1%% more are re-sent copies)")
    parser.add_argument("--every", type=int, default=10_000, help="sample the RSS this often")
    parser.add_argument("--trace", action="store_true", help="the worker under tracemalloc")
    parser.add_argument("--samples", action="store_true",
                        help="print every (events, worker RSS MiB) sample too")
    parser.add_argument("--rate", type=int, default=None,
                        help="events/s the producer offers (default: as fast as it can); below "
                             "the worker's rate, the worker's own memory is measured rather "
                             "than the backlog the broker hands it")
    parser.add_argument("--produce", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inspected-worker", metavar="REPORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inspected_worker is not None:
        inspected_worker(args.inspected_worker, args.trace)
    elif args.produce is not None:
        asyncio.run(produce(args.produce, args.rate))
    else:
        print(json.dumps(asyncio.run(measure(args.events, args.every, args.trace,
                                                    args.samples, args.rate)), indent=2))


if __name__ == "__main__":
    main()
