"""DemoRunner: the whole ledger from one command, on the embedded stack or configured servers.

1. Bring up the embedded stack unless servers are configured; migrate; ensure the topics.
2. Import the packaged catalog (prices valid from the start of the demo's three months).
3. Start two ``ledger project`` worker processes.
4. Create the keys; then a separate process (``ops.demo.emitter``) generates and emits the
   usage (with ~1% re-sent duplicates) and a few hundred poison messages straight to the
   topic, while this one revokes a few keys half-way and, as a gateway would, calls
   ``authorize`` as traffic flows. Live progress: emitted, projected, lag.
5. Wait until the workers have applied everything, stop them, and report (see report.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ledger.catalog import load_snapshot
from ledger.db import connect
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from ops.catalog_import import CatalogImporter
from ops.demo.emitter import EmitterProcess, TrafficJob
from ops.demo.traffic import DemoKey, TrafficGenerator
from ops.devstack import DevStack
from ops.migrate import Migrator
from projections.storage import projected_up_to
from readmodels import CacheStats, ReadModels
from readmodels.keys import count_projected

WORKERS = 2
REVOKED_KEYS = 5


@dataclass
class DemoResult:
    keys: list[DemoKey]
    revoked: list[DemoKey]
    generator: TrafficGenerator
    emitted_messages: int
    duplicates: int
    poison: int
    started_at: datetime
    emit_seconds: float
    total_seconds: float
    authorize_calls: int = 0
    project_seconds: float = 0.0  # from the first usage event emitted to the last projected
    cache_stats: dict[str, CacheStats] = field(default_factory=dict)
    worker_logs: list[Path] = field(default_factory=list)


class DemoRunner:
    def __init__(self, settings: Settings, *, events: int, keys: int, seed: int,
                 console: Console) -> None:
        self.stack = DevStack(settings)
        # The stack decides what it manages from the raw settings; the rest needs the URLs.
        self.settings = settings.model_copy(update={
            "database_url": self.stack.database_url,
            "kafka_bootstrap_servers": self.stack.kafka_bootstrap_servers,
        })
        self.events, self.key_count, self.seed = events, keys, seed
        self.console = console
        self.workers: list[subprocess.Popen[bytes]] = []
        self.authorize_calls = 0

    @property
    def dsn(self) -> str:
        return self.stack.database_url

    async def prepare(self) -> None:
        self.stack.up()
        conn = await connect(self.dsn, self.settings,
                             statement_timeout=self.settings.db_migrate_statement_timeout)
        try:
            await Migrator(conn).migrate()
        finally:
            await conn.close()
        await ensure_topics(self.stack.kafka_bootstrap_servers, topic_specs(self.settings))

    def start_workers(self) -> list[Path]:
        env = dict(os.environ, **self.settings.environment())  # the workers see our settings
        logs = []
        home = self.settings.ledger_home
        home.mkdir(parents=True, exist_ok=True)
        for index in range(WORKERS):
            log = home / f"demo-worker-{index}.log"
            with log.open("ab") as out:
                self.workers.append(subprocess.Popen(
                    [sys.executable, "-m", "ops", "project", "--log-level", "WARNING"],
                    env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL))
            logs.append(log)
        return logs

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    async def run(self) -> DemoResult:
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        self.console.print("[bold]1/5[/] embedded stack, migrations, topics")
        await self.prepare()
        generator = TrafficGenerator(self.seed, load_snapshot())
        self.console.print("[bold]2/5[/] importing the model catalog")
        importer = CatalogImporter(self.settings, dsn=self.dsn,
                                   bootstrap_servers=self.stack.kafka_bootstrap_servers)
        summary = await importer.run(generator.price_map, source="packaged snapshot",
                                     valid_from=generator.window_start)
        self.console.print("    " + ", ".join(f"{k} {v}" for k, v in summary.counts().items()))
        self.console.print(f"[bold]3/5[/] starting {WORKERS} projector worker processes")
        logs = self.start_workers()
        try:
            await importer.wait_until_projected(summary, timeout_s=300)
            result = await self._traffic(generator, started_at)
        finally:
            self.stop_workers()
        result.worker_logs = logs
        result.total_seconds = time.perf_counter() - started
        return result

    async def _traffic(self, generator: TrafficGenerator, started_at: datetime) -> DemoResult:
        keys = generator.keys(self.key_count)
        revoke_at = self.events // 2
        revoked = generator.rng.sample(keys, min(REVOKED_KEYS, len(keys)))
        self.console.print(f"[bold]4/5[/] {len(keys):,} keys, {self.events:,} usage events "
                           "(emitted by a separate process)")
        baseline = await self._projected()
        async with LedgerProducer.from_settings(self.settings, source="ledger-demo") as producer, \
                ReadModels.open(self.settings) as rm:
            for key in keys:
                await producer.emit(key.event)
            await producer.flush()
            await self._wait_keys(keys, revoked=False)  # a gateway hands out keys once live
            # Its own spool: one spool directory belongs to one producer process.
            emitting = self.settings.model_copy(update={
                "spool_dir": self.settings.resolved_spool_dir.with_name("spool-demo-emitter")})
            emitter = EmitterProcess(TrafficJob(emitting, self.seed, generator.now,
                                                [key.id for key in keys], self.events))
            progress, emitted_bar, projected_bar = self._progress()
            emit_started = time.perf_counter()
            emitter.start()
            try:
                with progress:
                    revoke_sent = False
                    while not emitter.done():
                        emitted = emitter.emitted
                        if not revoke_sent and emitted > revoke_at:
                            for key in revoked:
                                await producer.emit(producer.events.revoke_key(
                                    api_key_id=key.id, reason="demo: leaked"))
                            revoke_sent = True
                        for _ in range(5):  # the gateway's hot path, on a sample of requests
                            key = generator.rng.choice(keys[:200])
                            await rm.keys.authorize(key.plaintext, generator.rng.choice(
                                generator.models[:10]))
                            self.authorize_calls += 1
                        progress.update(emitted_bar, completed=emitted)
                        await self._show_projected(progress, projected_bar, baseline, emitted)
                        await asyncio.sleep(0.1)
                    traffic = emitter.outcome()
                    if not revoke_sent:  # fewer events than one progress step
                        for key in revoked:
                            await producer.emit(producer.events.revoke_key(
                                api_key_id=key.id, reason="demo: leaked"))
                    await producer.flush()
                    progress.update(emitted_bar, completed=self.events)
                    emit_seconds = time.perf_counter() - emit_started
                    total = self.events + traffic.duplicates + traffic.poison
                    while await self._show_projected(
                            progress, projected_bar, baseline, total) < total:
                        if all(w.poll() is not None for w in self.workers):
                            raise RuntimeError(
                                "every projector worker exited; see .ledger/*.log")
                        await asyncio.sleep(0.3)
                    project_seconds = time.perf_counter() - emit_started
            finally:
                emitter.stop()
            await self._wait_keys(revoked, revoked=True)
            caches = dict(rm.stats().caches)
        generator.expected = traffic.expected  # the ground truth, from the process that emitted
        return DemoResult(keys, revoked, generator, total, traffic.duplicates, traffic.poison,
                          started_at, emit_seconds, 0.0, self.authorize_calls, project_seconds,
                          caches)

    def _progress(self) -> tuple[Progress, TaskID, TaskID]:
        progress = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                            TimeElapsedColumn(), console=self.console)
        emitted = progress.add_task("emitted", total=self.events, note="")
        projected = progress.add_task("projected", total=self.events, note="lag ?")
        return progress, emitted, projected

    async def _projected(self) -> int:
        conn = await connect(self.dsn, self.settings)
        try:
            return await projected_up_to(conn, "usage", self.settings.topic_usage)
        finally:
            await conn.close()

    async def _show_projected(self, progress: Progress, bar: TaskID, baseline: int,
                              emitted: int) -> int:
        done = await self._projected() - baseline
        progress.update(bar, completed=min(done, emitted), total=max(emitted, self.events),
                        note=f"lag {max(emitted - done, 0):,}")
        return done

    async def _wait_keys(self, keys: list[DemoKey], *, revoked: bool) -> None:
        """Wait until the keys projection has the keys (or their revocations)."""
        conn = await connect(self.dsn, self.settings)
        try:
            ids = [key.id for key in keys]
            for _ in range(1200):
                done = await count_projected(conn, ids, revoked_only=revoked)
                if done == len(ids):
                    return
                await asyncio.sleep(0.1)
            raise RuntimeError("the keys projection did not catch up in 120s; see `ledger status`")
        finally:
            await conn.close()
