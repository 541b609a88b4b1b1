"""Chaos run: kill -9 projector workers, crash PostgreSQL and restart the broker while a
LedgerProducer emits usage, then check that nothing acknowledged was lost or counted twice.

    .venv/bin/python tools/chaos.py --events 200000 --kills 15 --seed 1

Starts its own embedded PostgreSQL and broker on free ports in a temp dir (logs in files),
two `ledger project --projection usage` worker processes, and stops all of it at the end,
on failure and on Ctrl-C. The seed fixes the traffic (keys, models, costs, duplicates) and
the chaos schedule (which event index triggers which kill or restart); event ids are fresh.
Exit 0: nothing lost or double counted and the summaries equal the ground truth; 1: a check
failed; 2: the run itself broke; 130: interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

from ledger.events import UsageRecorded
from ledger.producer import Delivery, LedgerProducer, partition_for_key
from ledger.settings import Settings
from ledger.topics import describe_topics, ensure_topics, topic_specs
from ops.devstack import EmbeddedBroker, EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator
from projections.status import projection_status

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "o3-mini", "gemini/gemini-2.5-flash")
WINDOW_START = datetime(2026, 9, 1, tzinfo=UTC)  # three months: three usage partitions
WORKERS = 2
Group = tuple[str, str, str]  # api key, model, month


class Row(NamedTuple):  # one acknowledged event, as the summaries must count it
    group: Group
    error: int
    prompt: int
    completion: int
    cost: Decimal
    seq: int  # emitted as the seq-th event: the phase a lost event was sent in


_now = time.monotonic


@dataclass
class Run:
    """What the emitter and the chaos saw; the ground truth is every acknowledged event."""

    started: float = field(default_factory=_now)
    truth: dict[str, Row] = field(default_factory=dict)  # event_id -> row, distinct
    emitted: int = 0
    duplicates: int = 0
    acked: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # what a failed delivery raised
    facts: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # the event being emitted
    phases: dict[str, int] = field(default_factory=dict)  # phase -> its first index

    def phase_of(self, index: int) -> str:
        return max(((i, name) for name, i in self.phases.items() if i <= index),
                   default=(0, "before the broker restart"))[1]

    def note(self, text: str) -> None:
        print(f"t+{_now() - self.started:6.1f}s  {text}", flush=True)

    def on_delivery(self, event_id: str, row: Row) -> Callable[[asyncio.Future[Delivery]], None]:
        def done(future: asyncio.Future[Delivery]) -> None:
            error = "cancelled" if future.cancelled() else future.exception()
            if error is not None:
                self.failures[str(error)[:120]] += 1
                return
            self.acked += 1  # "sent" and "spooled" are both promises not to lose it
            self.statuses[future.result().status] += 1
            self.truth[event_id] = row
        return done


class Workers:
    """The projector processes: spawn, kill -9 and respawn, watch, stop with SIGTERM."""

    def __init__(self, env: dict[str, str], logdir: Path, run: Run) -> None:
        self.env, self.logdir, self.run = env, logdir, run
        self.procs: list[subprocess.Popen[bytes]] = []
        self.respawn_s: list[float] = []  # kill -9 -> new process started
        self.rejoin_s: list[float] = []  # new process started -> "usage: assigned" in its log
        self.waiting: dict[int, tuple[float, int]] = {}  # slot -> (spawned at, log offset)
        self.rejoin_missed = 0  # killed again (or the run ended) before it was assigned
        self.unexpected: list[str] = []
        self.killing: set[int] = set()  # between kill -9 and respawn: not an unexpected exit

    def log(self, slot: int) -> Path:
        return self.logdir / f"worker-{slot}.log"

    def spawn(self, slot: int) -> None:
        log = self.log(slot)
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:  # own session: a Ctrl-C on the terminal is ours to handle
            proc = subprocess.Popen(
                [sys.executable, "-m", "ops", "project", "--projection", "usage"],
                env=self.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.procs[slot:slot + 1] = [proc]
        self.rejoin_missed += slot in self.waiting
        self.waiting[slot] = (_now(), offset)

    async def kill(self, slot: int) -> None:
        proc, started = self.procs[slot], _now()
        self.killing.add(slot)
        try:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            self.spawn(slot)
        finally:
            self.killing.discard(slot)
        self.respawn_s.append(_now() - started)
        self.run.note(f"kill -9 worker {slot} (pid {proc.pid}); respawned as pid "
                      f"{self.procs[slot].pid} in {self.respawn_s[-1] * 1000:.0f} ms")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for slot, proc in enumerate(self.procs):
                if slot not in self.killing and proc.poll() is not None:  # not asked to stop
                    self.unexpected.append(f"worker {slot} pid {proc.pid} exited {proc.returncode}")
                    self.run.note(f"UNEXPECTED: {self.unexpected[-1]}; respawning")
                    self.spawn(slot)
            for slot, (spawned, offset) in list(self.waiting.items()):
                with self.log(slot).open("rb") as log:
                    log.seek(offset)
                    if b"usage: assigned" in log.read():
                        self.rejoin_s.append(_now() - spawned)
                        del self.waiting[slot]

    async def terminate(self) -> list[tuple[int | None, float]]:
        self.rejoin_missed, self.waiting = self.rejoin_missed + len(self.waiting), {}

        async def one(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
            started = _now()
            proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(proc.wait, 60), _now() - started
            except subprocess.TimeoutExpired:
                proc.kill()
                return None, _now() - started  # still running 60 s after SIGTERM

        return list(await asyncio.gather(*(one(p) for p in self.procs)))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _sql(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def projected(dsn: str) -> int | None:
    try:
        return int((await _sql(dsn, "SELECT count(*) FROM usage_records"))[0][0])
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None  # PostgreSQL is down (the crash) or recovering


async def catch_up(dsn: str, target: Callable[[], int], limit_s: float, stall_s: float) -> bool:
    """Wait until usage_records holds target() rows; give up after a stall or the limit."""
    deadline, last, moved = _now() + limit_s, -1, _now()
    while _now() < deadline and _now() - moved < stall_s:
        count = await projected(dsn)
        if count is not None and count >= target():
            return True
        if count is not None and count != last:
            last, moved = count, _now()
        await asyncio.sleep(0.5)
    return False


class Chaos:
    def __init__(self, args: argparse.Namespace, pg: EmbeddedPostgres, broker: EmbeddedBroker,
                 home: Path, run: Run) -> None:
        self.args, self.pg, self.broker, self.run = args, pg, broker, run
        self.settings = Settings(
            database_url=pg.dsn, kafka_bootstrap_servers=broker.bootstrap_servers,
            ledger_home=home / "ledger-home", spool_dir=home / "spool",
            consumer_group="chaos-projector")
        self.workers = Workers(dict(os.environ, **self.settings.environment()), home, run)
        self.rng = random.Random(args.seed)
        self.kills: asyncio.Queue[int] = asyncio.Queue()  # bound to the loop on first use
        self.restarts: list[asyncio.Task[None]] = []

    async def main(self) -> int:
        conn = await asyncpg.connect(self.pg.dsn)
        try:
            await Migrator(conn).migrate()
        finally:
            await conn.close()
        await ensure_topics(self.broker.bootstrap_servers, topic_specs(self.settings))
        for slot in range(WORKERS):
            self.workers.spawn(slot)
        helpers = [asyncio.create_task(c) for c in (self.workers.watch(), self._progress(),
                                                    self._killer())]
        self.run.note(f"{WORKERS} workers started; emitting {self.args.events:,} events at "
                      f"{self.args.rate:,}/s")
        try:
            await self._emit()
            await self.kills.join()  # the last kill has respawned its worker
            await asyncio.gather(*self.restarts)  # PostgreSQL and the broker are up again
            self.run.note(f"waiting for the projectors: {len(self.run.truth):,} distinct")
            started = _now()
            caught = await catch_up(self.pg.dsn, lambda: len(self.run.truth),
                                    self.args.catchup_timeout, self.args.stall)
            self.run.facts["final_catchup"] = (caught, _now() - started)
            await asyncio.sleep(1)  # the watcher sees a last rejoin
        finally:
            for task in helpers + self.restarts:
                task.cancel()
            stopped = await self.workers.terminate()
        return 0 if await verify(self.args, self.settings, self.run, self.workers, stopped) else 1

    def _plan(self) -> dict[int, list[str]]:
        n, plan = self.args.events, defaultdict[int, list[str]](list)
        for index in self.rng.sample(range(n // 50, n - n // 50), self.args.kills):
            plan[index].append("kill")
        plan[self.rng.randrange(n * 25 // 100, n * 45 // 100)].append("postgres")
        plan[self.rng.randrange(n * 55 // 100, n * 75 // 100)].append("broker")
        return plan

    async def _emit(self) -> None:
        rng, run, plan = self.rng, self.run, self._plan()
        keys = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(self.args.keys)]
        recent: deque[tuple[UsageRecorded, Row]] = deque(maxlen=5000)
        loop = asyncio.get_running_loop()
        paced_from = loop.time()
        async with LedgerProducer.from_settings(self.settings, source="chaos") as producer:

            async def send(event: UsageRecorded, row: Row) -> None:
                future = await producer.emit(event)
                future.add_done_callback(run.on_delivery(str(event.event_id), row))
                run.emitted += 1

            for index in range(self.args.events):
                run.index = index
                for action in plan.get(index, ()):
                    if action == "kill":
                        self.kills.put_nowait(rng.randrange(WORKERS))
                    elif action == "postgres":
                        down = rng.uniform(2.0, 6.0)
                        self.restarts.append(asyncio.create_task(self._crash_postgres(down)))
                    else:  # a memory-only broker forgets its logs: first project them
                        paused = loop.time()
                        await self._stop_broker(producer, index)
                        down = rng.uniform(2.0, 5.0)
                        self.restarts.append(asyncio.create_task(self._start_broker(down)))
                        paced_from += loop.time() - paused
                when = WINDOW_START + timedelta(seconds=rng.randrange(90 * 86400))
                cost = Decimal(rng.randrange(1, 10**6)) / Decimal(10**9)
                prompt, completion, error = rng.randrange(5000), rng.randrange(800), rng.random()
                event = producer.events.usage(
                    api_key_id=rng.choice(keys), request_id=f"chaos-{index}",
                    model=rng.choice(MODELS), prompt_tokens=prompt, completion_tokens=completion,
                    occurred_at=when, status="error" if error < 0.05 else "success", cost_usd=cost)
                row = Row((str(event.api_key_id), event.model, when.strftime("%Y-%m-01")),
                          int(error < 0.05), prompt, completion, cost, index)
                await send(event, row)
                if recent and rng.random() < self.args.duplicates:  # a gateway's retry
                    await send(*rng.choice(recent))
                    run.duplicates += 1
                recent.append((event, row))
                if index % 50 == 0:
                    await asyncio.sleep(max(paced_from + index / self.args.rate - loop.time(), 0))
            run.note(f"emitted {run.emitted:,} deliveries; flushing, draining the spool")
            started = _now()
            await producer.flush()
            for _ in range(int(self.args.stall * 5)):
                if not producer.spooling:
                    break
                await asyncio.sleep(0.2)
            run.facts["flush"] = (_now() - started, producer.spooling)

    async def _stop_broker(self, producer: LedgerProducer, index: int) -> None:
        """Emission paused: flush, wait until the projectors hold it all, stop the broker."""
        started = _now()
        await producer.flush()
        self.run.note(f"broker restart at event {index:,}: waiting for the projectors to catch "
                      f"up with {len(self.run.truth):,} acknowledged distinct events")
        caught = await catch_up(self.pg.dsn, lambda: len(self.run.truth),
                                self.args.catchup_timeout, self.args.stall)
        self.run.facts["pre_restart"] = (caught, _now() - started)
        await asyncio.to_thread(self.broker.stop)  # still paused: nothing acked, then forgotten
        self.run.facts["broker_stopped"] = _now()
        self.run.phases["broker down"] = index
        self.run.note(f"caught up: {caught}; broker stopped {_now() - started:.1f} s after the "
                      "pause (memory storage: every topic and offset is gone)")

    async def _crash_postgres(self, down_s: float) -> None:
        self.run.note("PostgreSQL: pg_ctl stop -m immediate (a crash)")
        started = _now()
        await asyncio.to_thread(self.pg.stop, "immediate")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.pg.start)
        self.run.facts["pg_down_s"] = _now() - started
        self.run.note(f"PostgreSQL: up again after {_now() - started:.1f} s (crash recovery)")

    async def _start_broker(self, down_s: float) -> None:
        started, specs = self.run.facts["broker_stopped"], topic_specs(self.settings)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.broker.start)
        up = _now()
        self.run.phases["broker up, before ensure_topics"] = self.run.index + 1
        await asyncio.sleep(self.args.ensure_delay)  # 0: as soon as it answers
        created = await ensure_topics(self.broker.bootstrap_servers, specs)
        self.run.phases["after ensure_topics"] = self.run.index + 1
        usage = self.settings.topic_usage
        partitions = (await describe_topics(self.broker.bootstrap_servers, [usage]))[usage]
        self.run.facts["broker"] = (
            f"down {up - started:.1f} s; topics re-created by chaos.py {_now() - up:.2f} s after "
            f"the broker answered: {', '.join(created) or 'none needed (already there!)'}; "
            f"{usage} has {partitions} partitions")
        self.run.note("broker: " + self.run.facts["broker"])

    async def _killer(self) -> None:
        while True:
            await self.workers.kill(await self.kills.get())
            self.kills.task_done()

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(10)
            count = await projected(self.pg.dsn)
            self.run.note(f"emitted {self.run.emitted:,}, acknowledged {self.run.acked:,} "
                          f"({len(self.run.truth):,} distinct), projected {count}")


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"n={len(values)}, min {min(values):.2f} s, p50 {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s")


async def verify(args: argparse.Namespace, settings: Settings, run: Run, workers: Workers,
                 stopped: list[tuple[int | None, float]]) -> bool:
    """Compare PostgreSQL with the ground truth; print the summary block; True when it holds."""
    dsn, partitions = settings.database_url or "", settings.topic_usage_partitions
    ids = [r[0] for r in await _sql(dsn, "SELECT event_id::text FROM usage_records")]
    in_pg, acked = set(ids), run.truth.keys()
    summary = await _sql(dsn, "SELECT api_key_id::text, model, month::text, requests, errors, "
                              "prompt_tokens, completion_tokens, cost_usd "
                              "FROM monthly_usage_summaries")
    claimed = (await _sql(dsn, "SELECT count(*) FROM usage_event_ids"))[0][0]
    dead = await _sql(dsn, "SELECT error_kind, count(*) FROM dead_letters GROUP BY 1 ORDER BY 1")
    truth: dict[Group, list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0)])
    for row in run.truth.values():
        truth[row.group] = [a + b for a, b in zip(truth[row.group], (1, *row[1:5]), strict=True)]
    actual = {(r[0], r[1], r[2]): list(r[3:]) for r in summary}
    differ = sorted(g for g in truth.keys() | actual.keys() if truth.get(g) != actual.get(g))
    status, _ = await projection_status(settings, dsn, settings.kafka_bootstrap_servers or "")
    usage = [r for r in status if r.projection == "usage"]
    lag, unknown = sum(r.lag or 0 for r in usage), sum(r.lag is None for r in usage)
    lost = [run.truth[event_id] for event_id in acked - in_pg]
    resets = sum(workers.log(slot).read_bytes().count(b"the broker's log was replaced")
                 for slot in range(WORKERS))  # one per partition and reset; more: a loop
    requests = sum(r[3] for r in summary)
    double = max(requests - len(ids), 0) + len(ids) - len(in_pg)
    ok = not lost and not double and not differ
    facts = run.facts
    (pre_caught, pre_s), (caught, final_s) = facts["pre_restart"], facts["final_catchup"]
    flush_s, spooling = facts["flush"]
    lines = [
        "command: .venv/bin/python tools/chaos.py " + shlex.join(sys.argv[1:]),
        f"run: {_now() - run.started:.0f} s; {args.events:,} events offered at {args.rate:,}/s, "
        f"{args.keys} keys, {len(MODELS)} models, 3 months; {WORKERS} usage workers",
        f"deliveries emitted: {run.emitted:,} ({run.duplicates:,} re-sent duplicates)",
        f"events acknowledged: {run.acked:,} (sent {run.statuses['sent']:,}, spooled "
        f"{run.statuses['spooled']:,}); failed deliveries: {run.failures.total()} "
        f"{dict(run.failures) or ''}",
        f"distinct acknowledged: {len(acked):,}",
        f"distinct in PostgreSQL: usage_records {len(ids):,} rows, {len(in_pg):,} distinct "
        f"event_ids, {len(in_pg & acked):,} matching acknowledged; usage_event_ids {claimed:,}",
        f"LOST (acknowledged, not in usage_records): {len(lost):,}" + (
            f"; by phase {dict(Counter(run.phase_of(row.seq) for row in lost))}; by partition "
            f"(murmur2 of the key over {partitions}) " + str(sorted(Counter(
                partition_for_key(row.group[0].encode(), partitions) for row in lost).items()))
            if lost else ""),
        f"DOUBLE COUNTED: {double:,} (summaries' requests {requests:,} vs usage_records "
        f"{len(ids):,}; usage_records - distinct event_ids {len(ids) - len(in_pg):,}; "
        f"usage_records - distinct acknowledged {len(ids) - len(acked):,}); projected but "
        f"never acknowledged {len(in_pg - acked):,}",
        "summaries == ground truth (requests, errors, tokens, cost per key/model/month): "
        f"{'yes' if not differ else 'NO'} ({len(truth):,} groups, {len(differ):,} differ"
        + (f", e.g. {differ[:2]})" if differ else ")"),
        "dead letters by reason: " + (", ".join(f"{k} {n}" for k, n in dead) or "none"),
        f"log resets seen by the workers: {resets} (one broker restart: about "
        f"{partitions} expected); lag at the end: {lag:,} (partitions without a log end: "
        f"{unknown})" + (
            "; checkpoint/log end: " + " ".join(f"{r.partition}:{r.checkpoint}/{r.log_end}"
                                                for r in usage) if lag or unknown else ""),
        f"kill -9: {len(workers.respawn_s)}, respawned in {_spread(workers.respawn_s)}",
        f"respawned worker assigned partitions after {_spread(workers.rejoin_s)}; killed again "
        f"or stopped first: {workers.rejoin_missed}; unexpected exits: "
        f"{len(workers.unexpected)} {workers.unexpected or ''}",
        f"PostgreSQL crash (stop -m immediate) + start: down {facts['pg_down_s']:.1f} s",
        f"broker restart: projectors caught up before it: {pre_caught} in {pre_s:.1f} s; "
        f"{facts['broker']}",
        f"producer at the end: flush + spool drained in {flush_s:.1f} s (still spooling: "
        f"{spooling}); projectors caught up at the end: {caught} in {final_s:.1f} s",
        "SIGTERM at the end: " + ", ".join(
            f"worker {i} exit {code} in {secs:.1f} s" for i, (code, secs) in enumerate(stopped)),
        f"verdict: {'PASS' if ok else 'FAIL'}",
    ]
    bar = "=" * 30
    print(f"\n{bar} chaos run summary {bar}\n" + "\n".join(lines) + f"\n{bar * 2}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=int, default=1000, help="events offered per second")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--duplicates", type=float, default=0.01, help="re-sent fraction")
    parser.add_argument("--catchup-timeout", type=float, default=300.0)
    parser.add_argument("--stall", type=float, default=60.0,
                        help="stop waiting for the projectors after this long without progress")
    parser.add_argument("--ensure-delay", type=float, default=0.0,
                        help="seconds between the broker answering again and ensure_topics")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args()
    if args.events < 1000 or not 0 <= args.kills <= args.events // 2:
        parser.error("--events must be >= 1000 and --kills between 0 and events/2")
    home = Path(tempfile.mkdtemp(prefix="ledger-chaos-"))
    pg = EmbeddedPostgres(home / "pg" / "pgdata", free_port())
    broker = EmbeddedBroker(home / "broker", free_port())
    run, code, chaos = Run(), 2, None
    logging.basicConfig(filename=home / "chaos.log", level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: clean up as Ctrl-C
    try:
        pg.start()
        broker.start()
        run.note(f"PostgreSQL on {pg.port}, broker on {broker.port}, in {home}")
        chaos = Chaos(args, pg, broker, home, run)
        code = asyncio.run(chaos.main())
    except KeyboardInterrupt:
        print("interrupted: stopping everything this run started", file=sys.stderr)
        code = 130
    except Exception:
        traceback.print_exc()
        print("the chaos run broke (not a verdict on the ledger)", file=sys.stderr)
    finally:
        if chaos is not None:
            chaos.workers.kill_all()
        broker.stop()
        pg.stop("immediate")
        if args.keep or code != 0:
            print(f"logs and data kept in {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
