"""The demo's gateway in its own process: generate usage, emit it, send the poison.

The generator and the producer share one Python process with nothing else, so the demo's
own event loop (progress, authorize() calls, revocations) never slows emission, and the
emitting runs on the second core while the workers and PostgreSQL take what they need.
The process sends its ground truth (what it emitted, each event once) back when it is done.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.sharedctypes import Synchronized

from aiokafka import AIOKafkaProducer

from ledger.catalog import load_snapshot
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ops.demo.traffic import Expected, TrafficGenerator

PROGRESS_EVERY = 1000  # events between two updates of the shared counter


@dataclass(frozen=True)
class TrafficJob:
    settings: Settings
    seed: int
    now: datetime  # the parent's generator's clock: the same three-month window
    key_ids: list[uuid.UUID]
    events: int


@dataclass(frozen=True)
class TrafficOutcome:
    expected: Expected
    duplicates: int
    poison: int


class EmitterProcess:
    """Runs ``emit_traffic`` in a spawned process; ``emitted`` is its live usage count."""

    def __init__(self, job: TrafficJob) -> None:
        context = multiprocessing.get_context("spawn")  # no forked event loop or sockets
        self._counter: Synchronized[int] = context.Value("q", 0)
        self._results: multiprocessing.SimpleQueue[TrafficOutcome | str] = context.SimpleQueue()
        self._process = context.Process(target=_main, args=(job, self._counter, self._results),
                                        name="ledger-demo-emitter", daemon=True)

    def start(self) -> None:
        self._process.start()

    @property
    def emitted(self) -> int:
        return int(self._counter.value)

    def done(self) -> bool:
        return not self._results.empty() or not self._process.is_alive()

    def outcome(self) -> TrafficOutcome:
        """The process's result; raises if it failed (its error, one line)."""
        if self._results.empty():
            self._process.join(5)
            raise RuntimeError(f"the traffic process exited ({self._process.exitcode}) "
                               "without a result")
        result = self._results.get()
        self._process.join(30)
        if isinstance(result, str):
            raise RuntimeError(f"the traffic process failed: {result}")
        return result

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def _main(job: TrafficJob, counter: Synchronized[int],
          results: multiprocessing.SimpleQueue[TrafficOutcome | str]) -> None:
    try:
        results.put(asyncio.run(emit_traffic(job, counter)))
    except BaseException as exc:  # the parent prints it; a traceback here would be lost
        results.put(f"{type(exc).__name__}: {exc}")


async def emit_traffic(job: TrafficJob, counter: Synchronized[int]) -> TrafficOutcome:
    generator = TrafficGenerator(job.seed, load_snapshot(), now=job.now)
    duplicates, last_event = 0, None
    async with LedgerProducer.from_settings(job.settings, source="ledger-demo") as producer:
        for index, event in enumerate(generator.usage(job.key_ids, job.events)):
            await producer.emit(event)
            last_event = event
            if generator.rng.random() < 0.01:
                await producer.emit(event)  # a gateway retry: the same event again
                duplicates += 1
            if index % PROGRESS_EVERY == 0:
                counter.value = index + 1
        await producer.flush()
    assert last_event is not None
    poison = max(100, min(500, job.events // 2000))
    await _send_poison(job.settings, generator.poison(last_event, poison),
                       str(last_event.api_key_id).encode())
    counter.value = job.events
    return TrafficOutcome(generator.expected, duplicates, poison)


async def _send_poison(settings: Settings, bodies: list[bytes], key: bytes) -> None:
    """Poison goes straight to the topic, as a broken gateway in another language would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for body in bodies:
            await producer.send(settings.topic_usage, body, key=key)
        await producer.flush()
    finally:
        await producer.stop()
