"""LedgerProducer: the gateway-side writer of ledger events, built on aiokafka.

Design (why it looks like this):

* ``emit`` is ``async`` like aiokafka's ``send``: ``await producer.emit(event)`` serializes
  the event, enqueues it and returns a future for its delivery without waiting for the
  broker. It only suspends when ``max_pending`` records are unresolved, which is the
  back-pressure that bounds memory; otherwise it completes without yielding (a few
  microseconds). ``emit_and_wait`` also awaits the delivery.
* One sender task turns the queue into aiokafka ``BatchBuilder`` batches per partition (the
  same murmur2 partitioner as Kafka's clients, cached per key): far cheaper per record
  than ``send`` and it keeps per-key order.
* A delivery resolves to ``Delivery("sent", ...)`` when the broker acknowledged it with
  acks=all, or ``Delivery("spooled", ...)`` once it is fsynced in the local spool. A
  failed or timed-out batch goes to the spool, and from then on new records go to the
  spool too ("spooling mode") so the spool stays a single ordered backlog. A resend task
  drains the spool in order and switches back to direct sends when it is empty. On start
  an existing spool (left by a crash) is drained before anything new is sent. Duplicates
  are possible (a batch can be acknowledged after its timeout); loss is not.
* With a spool, every failed batch is spooled, non-retriable Kafka errors included
  (authorization, broker version, a batch too large for the broker...: states of the
  broker an operator can change). The one exception is a record the broker refuses on
  its own for its size: it is parked in ``spool_dir/rejected/`` and its future raises
  ``RecordRejectedError``. A future only raises ``ProducerError`` for a record that could
  not be spooled either. A spool that cannot drain is logged at WARNING (rate-limited)
  and reported as Prometheus gauges (``ledger.producer.metrics``).
* Without a ``spool_dir`` a failed delivery raises ``ProducerError`` on its future.
* ``close`` is bounded by ``close_timeout_s``: what has not reached Kafka by then is
  spooled and stays there for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ledger.events import EventBase, Topics
from ledger.exceptions import ProducerClosedError, ProducerError, SettingsError
from ledger.producer.builders import EventBuilder
from ledger.producer.metrics import StallWatch, spool_collector
from ledger.producer.sending import (
    Delivery,
    PartitionMap,
    PendingBound,
    PendingItem,
    RecordSender,
    refused_for_good,
    route_table,
)
from ledger.producer.spool import Spool, SpoolRecord
from ledger.producer.spooling import SpoolingMixin

if TYPE_CHECKING:
    from ledger.settings import Settings

log = logging.getLogger(__name__)

_SENDER_CHUNK = 10_000
# What aiokafka accepts as compression_type, plus "none" (the KAFKA_COMPRESSION spelling).
COMPRESSION_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


class LedgerProducer(SpoolingMixin):
    """Async context manager that appends ledger events to Kafka without losing any."""

    _loop: asyncio.AbstractEventLoop  # set by start(); emit refuses to run before that

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: Topics | None = None,
        source: str = "gateway",
        spool_dir: Path | str | None = None,
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        compression_type: str | None = None,
        max_pending: int = 100_000,
        acks: Literal["all", 0, 1] = "all",
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        resend_backoff_max_s: float = 5.0,
        resend_chunk: int = 5_000,
        close_timeout_s: float = 10.0,
        stall_warning_interval_s: float = 60.0,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        if compression_type is not None and compression_type not in COMPRESSION_CODECS:
            raise ValueError(f"compression_type must be one of {', '.join(COMPRESSION_CODECS)}"
                             f" or None, got {compression_type!r}")
        self.compression_type = None if compression_type == "none" else compression_type
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics if topics is not None else Topics()
        self.source = source
        self.events = EventBuilder(source)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.max_pending = max_pending
        self.close_timeout_s = close_timeout_s
        self.resend_backoff_max_s = resend_backoff_max_s
        self.resend_chunk = resend_chunk
        self._kafka_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "acks": acks,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "compression_type": self.compression_type,
            "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": retry_backoff_ms,
            # The embedded broker rejects InitProducerId; duplicates are deduplicated by
            # event_id downstream, so idempotence buys nothing here.
            "enable_idempotence": False,
        }
        self._request_timeout_s = request_timeout_ms / 1000
        self._routes = route_table(self.topics)
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._queue: deque[PendingItem] = deque()
        self._failed: deque[PendingItem] = deque()
        self._bound = PendingBound(max_pending)
        self._wakeup = asyncio.Event()
        self._spool_has_data = asyncio.Event()
        self._spool_drained = asyncio.Event()
        self._spool_drained.set()
        self._spool_lock = asyncio.Lock()
        self._spool: Spool | None = None
        self._spooling = False
        self._kafka: AIOKafkaProducer | None = None
        self._sender: RecordSender | None = None
        self._partitions = PartitionMap()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_hand: list[PendingItem] = []
        # Records the broker refused for good, waiting for the send loop to park them.
        self._refused: deque[PendingItem] = deque()
        self._rejected_records = 0
        self._stall = StallWatch(str(self.spool_dir), stall_warning_interval_s, log)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LedgerProducer:
        """Build from :class:`ledger.settings.Settings`; ``overrides`` win over what it says.

        Takes ``KAFKA_BOOTSTRAP_SERVERS``, the topic names, ``KAFKA_COMPRESSION`` and
        the spool directory (``SPOOL_DIR``, else ``LEDGER_HOME/spool``); pass
        ``spool_dir=None`` to run without a spool. Raises :class:`SettingsError` when
        ``KAFKA_BOOTSTRAP_SERVERS`` is not set.
        """
        if not settings.kafka_bootstrap_servers:
            raise SettingsError("KAFKA_BOOTSTRAP_SERVERS is not set: the producer needs a broker")
        options: dict[str, Any] = {
            "topics": Topics.from_settings(settings),
            "spool_dir": settings.resolved_spool_dir,
            "compression_type": settings.kafka_compression,
        }
        options.update(overrides)
        return cls(settings.kafka_bootstrap_servers, **options)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> LedgerProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._state != "new":
            raise ProducerClosedError(f"producer cannot start from state {self._state}")
        if self.spool_dir is not None:
            # Opening checks every frame; damage and torn tails are logged by the spool.
            self._spool = await asyncio.to_thread(Spool, self.spool_dir)
            if not self._spool.is_empty():
                # A backlog from a previous run goes out before anything new.
                self._enter_spooling()
        try:
            await self._connect()
        except (KafkaError, OSError) as error:
            if self._spool is None:
                raise ProducerError(f"cannot reach Kafka at {self.bootstrap_servers}") from error
            log.warning("Kafka unreachable at start, spooling: %s", error)
            self._enter_spooling()
        except BaseException:
            if self._spool is not None:
                self._spool.close()  # release the lock for the next attempt
            raise
        self._state = "running"
        loop = self._loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._send_loop(), name="ledger-producer-send"))
        if self._spool is not None:
            self._tasks.append(loop.create_task(self._resend_loop(), name="ledger-resend"))
            spool_collector().add(self)

    async def _connect(self) -> None:
        kafka = AIOKafkaProducer(**self._kafka_options)
        try:
            await kafka.start()
        except BaseException:
            await kafka.stop()
            raise
        self._kafka = kafka
        self._sender = RecordSender(kafka, self._partitions, self._request_timeout_s)

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush, drain the spool if the broker answers, and stop within the timeout."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        deadline = asyncio.get_running_loop().time() + (
            self.close_timeout_s if timeout_s is None else timeout_s
        )
        try:
            await asyncio.wait_for(self._wait_until_settled(), self._remaining(deadline))
        except TimeoutError:
            log.warning("close timed out, %d records unsent; spooling them", self._bound.count)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._spool_leftovers()
        if self._kafka is not None:
            try:
                # Stopping flushes aiokafka's own buffers, which are empty or already
                # spooled by now; the bound only guards against a dead broker.
                await asyncio.wait_for(self._kafka.stop(), max(self._remaining(deadline), 1.0))
            except TimeoutError:
                log.warning("aiokafka producer did not stop in time")
        if self._spool is not None:
            spool_collector().remove(self)
            await asyncio.to_thread(self._spool.close)
        self._state = "closed"

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.0)

    async def _wait_until_settled(self) -> None:
        await self.flush()
        if self._spool is not None:
            await self._spool_drained.wait()

    async def _spool_leftovers(self) -> None:
        """At close: everything not acknowledged by Kafka goes to the spool."""
        leftovers = self._unresolved(
            self._in_hand + list(self._refused) + list(self._failed) + list(self._queue))
        self._refused.clear()
        self._failed.clear()
        self._queue.clear()
        if leftovers:
            await self._spool_items(leftovers)

    # -- public API ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Emitted records whose delivery is not resolved yet (bounded by max_pending)."""
        return self._bound.count

    @property
    def spooling(self) -> bool:
        return self._spooling

    async def emit(self, event: EventBase) -> asyncio.Future[Delivery]:
        """Enqueue ``event``; returns a future resolved with its Delivery.

        Suspends only while ``max_pending`` records are unresolved (back-pressure).
        """
        if self._state != "running":
            raise ProducerClosedError(f"producer is {self._state}")
        route = self._routes.get(type(event))
        if route is None:
            raise TypeError(f"not a ledger event: {type(event).__name__}")
        topic, headers, dump = route
        record = SpoolRecord(topic, event.partition_key().encode(), dump(event), headers)
        bound = self._bound
        while bound.count >= bound.limit:
            await bound.wait_capacity()
            if self._state != "running":
                raise ProducerClosedError(f"producer is {self._state}")
        bound.count += 1
        future: asyncio.Future[Delivery] = self._loop.create_future()
        self._queue.append(PendingItem(record, future))
        self._wakeup.set()
        return future

    async def emit_and_wait(self, event: EventBase) -> Delivery:
        return await (await self.emit(event))

    async def wait_capacity(self) -> None:
        """Return once fewer than ``max_pending`` records are unresolved."""
        await self._bound.wait_capacity()

    async def flush(self) -> None:
        """Wait until every emitted record is acknowledged by Kafka or durably spooled."""
        await self._bound.wait_idle()

    # -- internals -------------------------------------------------------------------

    def _on_batch_done(
        self, topic: str, partition: int, items: list[PendingItem], result: object
    ) -> None:
        """Called by RecordSender when a live batch settles (result: metadata or error)."""
        if isinstance(result, BaseException):
            if self._spool is None:
                self._fail(items, ProducerError(
                    f"delivery to {topic}[{partition}] failed: {result!r}"))
            elif refused_for_good(result, len(items)):
                self._refused.extend(items)  # parked by the send loop (file I/O)
                self._wakeup.set()
            else:
                log.warning("send to %s[%d] failed (%r); spooling", topic, partition, result)
                self._enter_spooling()
                self._failed.extend(items)
                self._wakeup.set()
            return
        base_offset = getattr(result, "offset", None)
        resolved = 0
        for index, item in enumerate(items):
            if not item.settled:
                item.settled = True
                resolved += 1
                if not item.future.done():
                    offset = None if base_offset is None else base_offset + index
                    item.future.set_result(Delivery("sent", topic, partition, offset))
        # Counting only what this call resolved keeps the pending count exact even if a
        # record was also handed to the spool (at close, or after an unexpected error).
        self._release(resolved)

    async def _send_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._refused:
                refused = list(self._refused)
                self._refused.clear()
                self._in_hand = refused
                try:
                    await self._park(refused)
                finally:
                    self._in_hand = []
            while self._failed or self._queue:
                source = self._failed if self._failed else self._queue
                items = [source.popleft() for _ in range(min(len(source), _SENDER_CHUNK))]
                # Kept until handled so close() and the error path below can still spool them.
                self._in_hand = items
                try:
                    if self._spooling or self._sender is None:
                        await self._spool_items(items)
                    else:
                        await self._sender.send(items, self._on_batch_done)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ledger producer send loop error; spooling the batch")
                    self._failed.extend(self._unresolved(items))
                    if self._spool is not None:
                        self._enter_spooling()
                    await asyncio.sleep(0.1)
                finally:
                    self._in_hand = []

    def _unresolved(self, items: list[PendingItem]) -> list[PendingItem]:
        """Items not resolved yet, each once, including those of batches still in flight."""
        if self._sender is not None:
            items = items + self._sender.take_unacknowledged()
        seen: set[int] = set()
        unresolved = []
        for item in items:
            if not item.settled and id(item) not in seen:
                seen.add(id(item))
                unresolved.append(item)
        return unresolved
