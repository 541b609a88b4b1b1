"""Where one projector worker's time goes (issue 15; a script, not a test; not in make bench).

    .venv/bin/python bench/profile_worker.py [--events 200000] [--rate 100]

Fills a usage topic with bench/projector.py's gateway traffic, then runs one real
``ledger project --projection usage`` process until it has applied every event, and
measures, over that run:

* the CPU time per event of each process on the machine's cores: the worker, PostgreSQL
  (every backend and helper of the postmaster) and the embedded broker. On two cores their
  sum bounds the rate: 2 cores / (CPU per event) is what no tuning of overlap can beat;
* inside the worker, a sampling profile (py-spy, the ``bench`` extra, attached to the
  process: no instrumentation in the code being measured), folded into named stages:
  decoding (JSON to events, pydantic), pricing, the usage statement's rows and COPY
  (Python), the asyncpg client, aiokafka (fetch and record unpacking), the runner's own
  steps and the rest (event loop, gc). Only samples where the worker was running count.

Prints JSON and a table. Uses the embedded PostgreSQL and broker (DATABASE_URL and
KAFKA_BOOTSTRAP_SERVERS are not used: the CPU of a server elsewhere cannot be read here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from projector import filled_topic, scratch_db, stack, start_worker

# A sample belongs to the stage of its innermost frame that names one (C code such as
# pydantic-core or asyncpg's protocol shows as the Python frame that called it); within one
# frame the first marker listed wins, so "projections/" comes last.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("decode: JSON to events (pydantic)", ("projections/decoding.py",
                                           "parse_event (ledger/codec.py",
                                           "ledger/events.py", "ledger/fields.py")),
    ("pricing", ("projections/pricer.py", "ledger/pricing")),
    # The fingerprint serializes the event with ledger.codec.dump_usage.
    ("usage rows and fingerprints (Python)", ("projections/usage", "dump_usage (ledger/codec")),
    ("asyncpg client (COPY, protocol)", ("asyncpg/",)),
    # projections/unreadable.py iterates aiokafka's records (its C record parser shows there).
    ("aiokafka (fetch, record unpacking)", ("aiokafka/", "projections/unreadable.py")),
    ("runner steps, checkpoints, notify", ("projections/",)),
]
OTHER = "event loop, gc, other"
_APPLIED = ("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_checkpoints "
            "WHERE projection = 'usage'")


def stage_of(stack_text: str) -> str:
    for frame in reversed(stack_text.split(";")):  # py-spy writes the innermost frame last
        for name, markers in STAGES:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def fold(raw: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """py-spy ``--format raw`` lines (``frame;frame;... count``) -> samples per stage, and
    per stage the samples of each innermost frame (where in the stage the time goes)."""
    samples: Counter[str] = Counter()
    frames: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if stack_text and count.isdigit():
            stage = stage_of(stack_text)
            samples[stage] += int(count)
            innermost = stack_text.rsplit(";", 1)[-1]
            frames.setdefault(stage, Counter())[innermost] += int(count)
    return samples, frames


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postgres_processes(root: str) -> list[psutil.Process]:
    pidfile = Path(root) / "pg" / "pgdata" / "postmaster.pid"
    postmaster = psutil.Process(int(pidfile.read_text().splitlines()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


async def profile(events: int, rate: int, py_spy: str) -> dict[str, Any]:
    async with stack() as s, scratch_db(s.dsn) as dsn:
        settings, total = await filled_topic(s, dsn, events)
        env = dict(os.environ, **settings.environment())
        conn = await asyncpg.connect(dsn)
        worker = start_worker(env)
        out = Path(tempfile.mkdtemp(prefix="profile-worker-")) / "worker.raw"
        spy = None
        try:
            while await conn.fetchval(_APPLIED) == 0:  # the group join is not the worker's
                await asyncio.sleep(0.01)
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(worker.pid), "--format", "raw", "--rate",
                 str(rate), "--output", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            measured = [psutil.Process(worker.pid)], postgres_processes(s.root), (
                [psutil.Process(s.broker_pid)] if s.broker_pid else [])
            before = [cpu_seconds(group) for group in measured]
            first, started = await conn.fetchval(_APPLIED), time.perf_counter()
            while (done := await conn.fetchval(_APPLIED)) < total:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            after = [cpu_seconds(group) for group in measured]
        finally:
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
                spy.wait(60)
            worker.terminate()
            worker.wait(60)
            await conn.close()
    applied = done - first
    per_event = {name: round((a - b) / applied * 1e6, 1) for name, a, b in zip(
        ("worker", "postgresql", "broker"), after, before, strict=True)}
    cpu_total = sum(per_event.values())
    samples, frames = fold(out.read_text()) if out.exists() else (Counter(), {})
    shutil.rmtree(out.parent, ignore_errors=True)
    sampled = sum(samples.values()) or 1
    return {
        "events": applied, "events_per_s": round(applied / elapsed),
        "cpu_us_per_event": {**per_event, "total": round(cpu_total, 1)},
        "two_core_ceiling_events_per_s": round(2e6 / cpu_total) if cpu_total else None,
        "worker_stages": {name: {
            "share": round(count / sampled, 3),
            "us_per_event": round(per_event["worker"] * count / sampled, 1),
            "innermost_frames": {frame: round(n / count, 3)
                                 for frame, n in frames[name].most_common(4)},
        } for name, count in samples.most_common()},
        "worker_samples": sum(samples.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    # The embedded servers always: the CPU of servers elsewhere cannot be read from here.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    report = asyncio.run(profile(args.events, args.rate, py_spy))
    print(json.dumps(report, indent=2))
    cpu = report["cpu_us_per_event"]
    print(f"\n{report['events']} events at {report['events_per_s']}/s; CPU per event: worker "
          f"{cpu['worker']} us, PostgreSQL {cpu['postgresql']} us, broker {cpu['broker']} us "
          f"= {cpu['total']} us (two cores: at most {report['two_core_ceiling_events_per_s']}/s)")
    for name, stage in report["worker_stages"].items():
        print(f"  {stage['share']:6.1%} {stage['us_per_event']:7.1f} us  {name}")
        for frame, share in stage["innermost_frames"].items():
            print(f"          {share:6.1%} of it in {frame}")


if __name__ == "__main__":
    main()
