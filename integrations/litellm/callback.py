"""The LiteLLM callback: one ``UsageRecorded`` per finished call, success or failure.

In the proxy's ``config.yaml``::

    litellm_settings:
      callbacks: integrations.litellm.ledger_callback

LiteLLM runs ``async_log_success_event`` / ``async_log_failure_event`` in its logging worker
after the call (for a stream: once, after the last chunk, with the final usage). The
callback's path, in numbered steps (marked ``# Step N.`` where each happens):

1. On LiteLLM's path: read what LiteLLM reported into plain fields (``read_call``), while
   its objects are as they were at this callback, and queue them. The callback returns.
2. In a task of the ledger's own, on the same event loop, for every call queued by then:
   finish the fields (``finish_fields``: the event id, the time, from plain values step 1
   kept) and validate them into ``UsageRecorded`` events, one after the other.
3. Hand each event to the producer, whose ``emit`` serializes and queues it; delivery (or
   the spool, with the broker away) happens in the producer's tasks.

Steps 2 and 3 cost as much CPU as before they left LiteLLM's path (bench/litellm_callback.py
measures both), and a little less: done for several calls in a row, each runs warm. While
the producer holds its back-pressure, at most ``MAX_QUEUED_CALLS`` calls wait in step 1's
queue and further callbacks wait too, as they did on ``emit``. A call read is either handed
to the producer or counted as not recorded: a task cancelled half-way puts what it held back
in the queue for the next one, and ``close()`` counts what it could not hand over. Nothing
the ledger does here can fail the user's request: every error is caught, logged and counted
(``ledger_litellm_callback_errors_total``), at the stage where it happened.

The producer starts on the first call, in the process and event loop that runs the
callbacks, on that process's own spool slot (``integrations.litellm.slots``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from litellm.integrations.custom_logger import CustomLogger

from integrations.litellm.mapping import finish_fields, read_call, usage_fields
from integrations.litellm.metrics import CALLBACK_ERRORS, CALLBACK_EVENTS
from integrations.litellm.slots import drain_orphans_in_background, start_in_free_slot
from ledger.events import UsageRecorded
from ledger.producer import Delivery, LedgerProducer
from ledger.settings import Settings, load_settings

log = logging.getLogger(__name__)

SOURCE = "litellm"
# Calls read and queued for steps 2 and 3, at most (besides the batch being handed over):
# more wait, as on emit's back-pressure.
MAX_QUEUED_CALLS = 1000
HAND_OVER_TIMEOUT_S = 30.0  # how long close() lets the queued calls reach the producer
_SUCCEEDED, _FAILED = CALLBACK_EVENTS.labels("success"), CALLBACK_EVENTS.labels("error")


class LedgerCallback(CustomLogger):
    """A LiteLLM ``CustomLogger`` that records usage in the ledger."""

    def __init__(self, settings: Settings | None = None, *, source: str = SOURCE,
                 producer: LedgerProducer | None = None) -> None:
        super().__init__()
        self._settings = settings
        self.source = source
        self._producer = producer
        self._starting: asyncio.Task[LedgerProducer] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the producer runs
        # Step 1's queue and the task doing steps 2 and 3 for it. _idle: what that task awaits
        # while the queue is empty; _room: what callbacks await while it is full; _drained:
        # what flush awaits, resolved when the task has taken every call through step 3.
        self._queued: list[dict[str, Any]] = []
        self._emitting: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.orphan_drain: asyncio.Task[list[Path]] | None = None
        self.emitted = 0
        self.errors = 0

    # -- LiteLLM's hooks -------------------------------------------------------------------

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        await self.record(kwargs, response_obj)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        await self.record(kwargs, response_obj)

    # Synchronous calls (litellm.completion) reach only these, from a thread of LiteLLM's:
    # the event is handed to the loop the producer runs on. A process where no producer
    # runs yet (a purely synchronous script) cannot record them: counted and logged.

    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any,
                          start_time: Any, end_time: Any) -> None:
        self._record_from_thread(kwargs, response_obj)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any,
                          start_time: Any, end_time: Any) -> None:
        self._record_from_thread(kwargs, response_obj)

    def _record_from_thread(self, kwargs: Mapping[str, Any], response_obj: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.errors += 1
            CALLBACK_ERRORS.labels("no_event_loop").inc()
            log.warning("ledger: a synchronous LiteLLM call was not recorded: no producer "
                        "runs in this process yet (use the async API, as the proxy does)")
            return
        asyncio.run_coroutine_threadsafe(self.record(kwargs, response_obj), loop)

    # -- recording -------------------------------------------------------------------------

    def build_event(self, kwargs: Mapping[str, Any], response_obj: object) -> UsageRecorded:
        """The call's event, in one go (steps 1 and 2)."""
        fields = usage_fields(kwargs, response_obj)
        fields["source"] = self.source
        return _validated(fields)

    async def record(self, kwargs: Mapping[str, Any], response_obj: object) -> None:
        """Read the call's fields and queue them for the event; never raises (errors are
        logged and counted)."""
        stage = "build"
        try:
            # Step 1.
            fields = read_call(kwargs, response_obj)
            fields["source"] = self.source
            stage = "producer"
            if self._producer is None:
                await self._start()
            stage = "emit"
            # While the producer holds its back-pressure the queue fills: the callbacks wait.
            while len(self._queued) >= MAX_QUEUED_CALLS:
                await self._room_in_queue()
            self._queued.append(fields)
            self._wake_emitter()
        except Exception:
            self._failed(stage)

    def _wake_emitter(self) -> None:
        """Steps 2 and 3 for what is queued: the task woken if it waits, started if none runs."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            if not idle.done():  # done: cancelled with its task, which is ending
                idle.set_result(None)  # waking the task costs a third of starting one
                return
        emitting = self._emitting
        if emitting is None or emitting.done():
            if self._loop is None:  # a producer given to the constructor
                self._loop = asyncio.get_running_loop()
            self._emitting = self._loop.create_task(self._emit_queued())

    async def _room_in_queue(self) -> None:
        if self._emitting is None or self._emitting.done():
            self._wake_emitter()  # a task that ended would leave the queue to nobody
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._room)

    async def _emit_queued(self) -> None:
        """Steps 2 and 3 for the calls queued, until the callback closes."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._queued:
                    self._release(self._drained)
                    self._idle = loop.create_future()
                    await self._idle
                    continue
                fields_of_calls, self._queued = self._queued, []
                self._release(self._room)
                # Step 2. All validations first, then all emits: each runs warm.
                events = []
                for fields in fields_of_calls:
                    try:
                        events.append((fields, _validated(finish_fields(fields))))
                    except Exception:
                        self._failed("build")
                # Step 3.
                for index, (_, event) in enumerate(events):
                    try:
                        producer = self._producer
                        if producer is None:
                            raise RuntimeError("the producer was closed")
                        delivery = await producer.emit(event)
                    except asyncio.CancelledError:
                        # Stopped half-way (close, the loop ending): what was not handed over
                        # goes back to the head of the queue, to be counted, not forgotten.
                        self._queued[:0] = [fields for fields, _ in events[index:]]
                        raise
                    except Exception:
                        self._failed("emit")
                        continue
                    delivery.add_done_callback(_report_delivery)
                    self.emitted += 1
                    # Children bound once: labels() costs more than the increment.
                    (_SUCCEEDED if event.status == "success" else _FAILED).inc()
        finally:
            # Whoever waits for room or for the hand-over looks again (and starts a new task).
            self._release(self._room)
            self._release(self._drained)

    @staticmethod
    def _release(waiters: asyncio.Future[None] | None) -> None:
        if waiters is not None and not waiters.done():
            waiters.set_result(None)

    def _failed(self, stage: str) -> None:
        self.errors += 1
        CALLBACK_ERRORS.labels(stage).inc()
        log.exception("ledger: could not record a LiteLLM call (%s); the request itself "
                      "is not affected", stage)

    async def flush(self) -> None:
        """Wait until every call recorded so far is acknowledged by Kafka or spooled."""
        await self._hand_over()
        if self._producer is not None:
            await self._producer.flush()

    async def _hand_over(self) -> None:
        """Until every call queued by now has been through step 3 (a task that ended is
        started again for what it left)."""
        while self._queued or (self._emitting is not None and not self._emitting.done()
                               and self._idle is None):
            if self._emitting is None or self._emitting.done():
                self._wake_emitter()
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            assert self._emitting is not None
            await asyncio.wait((self._emitting, self._drained),
                               return_when=asyncio.FIRST_COMPLETED)

    async def _stop_emitter(self) -> None:
        task, self._emitting, self._idle = self._emitting, None, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _drop_queued(self, why: str) -> None:
        """Count the calls still queued as not recorded: the callback is closing."""
        dropped, self._queued = len(self._queued), []
        if dropped:
            self.errors += dropped
            CALLBACK_ERRORS.labels("emit").inc(dropped)
            log.error("ledger: %d LiteLLM call(s) not recorded: %s", dropped, why)

    async def _start(self) -> LedgerProducer:
        # One start for every callback that arrives while Kafka is being reached.
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._open())
        try:
            return await asyncio.shield(self._starting)
        except Exception:
            self._starting = None  # the next call tries again
            raise

    async def _open(self) -> LedgerProducer:
        settings = self._settings if self._settings is not None else load_settings()
        if not settings.kafka_bootstrap_servers:
            raise ValueError("set LEDGER_KAFKA_BOOTSTRAP_SERVERS for the LiteLLM callback")
        producer = await start_in_free_slot(settings, source=self.source)
        self._producer, self._loop = producer, asyncio.get_running_loop()
        base = settings.resolved_spool_dir
        self.orphan_drain = drain_orphans_in_background(
            settings, source=self.source, base=base, own=producer.spool_dir)
        log.info("ledger: LiteLLM usage goes to %s, spool %s", settings.kafka_bootstrap_servers,
                 producer.spool_dir)
        return producer

    @property
    def producer(self) -> LedgerProducer | None:
        return self._producer

    async def close(self) -> None:
        """Hand every queued call to the producer (for at most ``HAND_OVER_TIMEOUT_S``), then
        flush and stop it: what is not delivered by then stays spooled. Calls still queued
        after that (the producer held its back-pressure throughout, or they arrived while
        it closed) are counted as errors, never kept for a later producer unannounced."""
        try:
            await asyncio.wait_for(self._hand_over(), HAND_OVER_TIMEOUT_S)
        except TimeoutError:
            log.error("ledger: the producer took no LiteLLM call for %s s while closing",
                      HAND_OVER_TIMEOUT_S)
        await self._stop_emitter()
        self._drop_queued("the producer did not take them before the callback closed")
        if self.orphan_drain is not None:
            self.orphan_drain.cancel()
            await asyncio.gather(self.orphan_drain, return_exceptions=True)
        if self._producer is not None:
            await self._producer.close()
        # Calls recorded while the producer closed met a closing producer: counted as errors.
        await self._stop_emitter()
        self._drop_queued("they arrived while the callback closed")
        self._release(self._room)
        self._room, self._drained = None, None
        # The next call starts a new producer (a closed one cannot be restarted).
        self._producer, self._starting, self.orphan_drain = None, None, None
        self._loop = None


def _validated(fields: dict[str, Any]) -> UsageRecorded:
    # The model's validator directly, as EventBuilder does: same validation, less time; the
    # builder itself would draw a random event_id.
    return cast(UsageRecorded, UsageRecorded.__pydantic_validator__.validate_python(fields))


def _report_delivery(future: asyncio.Future[Delivery]) -> None:
    # Spooled is fine (resent later); only a record neither Kafka nor the spool took is lost.
    if not future.cancelled() and future.exception() is not None:
        CALLBACK_ERRORS.labels("delivery").inc()
        log.error("ledger: a LiteLLM usage event was not delivered: %s", future.exception())


# The instance a proxy config names: ``callbacks: integrations.litellm.ledger_callback``.
ledger_callback = LedgerCallback()
