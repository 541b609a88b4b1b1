"""The LiteLLM callback: one ``UsageRecorded`` per finished call, success or failure.

In the proxy's ``config.yaml``::

    litellm_settings:
      callbacks: integrations.litellm.ledger_callback

LiteLLM runs ``async_log_success_event`` / ``async_log_failure_event`` in a task of its own
after the call (for a stream: once, after the last chunk, with the final usage). The
callback builds the event and hands it to the producer, whose ``emit`` returns at once;
delivery (or the spool, with the broker away) happens in the producer's tasks. Nothing the
ledger does here can fail the user's request: every error is caught, logged and counted
(``ledger_litellm_callback_errors_total``).

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

from integrations.litellm.budget import RESERVATION_FIELD, BudgetReservations
from integrations.litellm.mapping import auth_metadata, usage_fields
from integrations.litellm.metrics import CALLBACK_ERRORS, CALLBACK_EVENTS
from integrations.litellm.slots import drain_orphans_in_background, start_in_free_slot
from ledger.events import UsageRecorded
from ledger.producer import Delivery, LedgerProducer
from ledger.settings import Settings, load_settings

log = logging.getLogger(__name__)

SOURCE = "litellm"
_SUCCEEDED, _FAILED = CALLBACK_EVENTS.labels("success"), CALLBACK_EVENTS.labels("error")


class LedgerCallback(CustomLogger):
    """A LiteLLM ``CustomLogger`` that records usage in the ledger."""

    def __init__(self, settings: Settings | None = None, *, source: str = SOURCE,
                 producer: LedgerProducer | None = None,
                 reservations: BudgetReservations | None = None) -> None:
        super().__init__()
        self._reservations = reservations
        self._settings = settings
        self.source = source
        self._producer = producer
        self._starting: asyncio.Task[LedgerProducer] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the producer runs
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
        fields = usage_fields(kwargs, response_obj)
        fields["source"] = self.source
        # The model's validator directly, as EventBuilder does: same validation, less time
        # on the path; EventBuilder itself would draw a random event_id.
        return cast(UsageRecorded, UsageRecorded.__pydantic_validator__.validate_python(fields))

    async def record(self, kwargs: Mapping[str, Any], response_obj: object) -> None:
        """Build and emit the call's event; never raises (errors are logged and counted)."""
        stage = "build"
        try:
            event = self.build_event(kwargs, response_obj)
            stage = "producer"
            producer = self._producer if self._producer is not None else await self._start()
            if self._loop is None:  # a producer given to the constructor
                self._loop = asyncio.get_running_loop()
            stage = "emit"
            delivery = await producer.emit(event)
        except Exception:
            self.errors += 1
            CALLBACK_ERRORS.labels(stage).inc()
            log.exception("ledger: could not record a LiteLLM call (%s); the request itself "
                          "is not affected", stage)
            return
        delivery.add_done_callback(_report_delivery)
        self.emitted += 1
        # Children bound once: labels() costs more than the increment on this path.
        (_SUCCEEDED if event.status == "success" else _FAILED).inc()
        if self._reservations is not None:
            await self._settle(kwargs, event)

    async def _settle(self, kwargs: Mapping[str, Any], event: UsageRecorded) -> None:
        reservation = auth_metadata(kwargs).get(RESERVATION_FIELD)
        if not reservation or self._reservations is None:
            return
        try:
            await self._reservations.settle(event.api_key_id, str(reservation))
        except Exception:
            self.errors += 1
            CALLBACK_ERRORS.labels("settle").inc()
            log.exception("ledger: could not settle the budget reservation of a LiteLLM call")

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
        """Flush and stop the producer (what is not delivered by then stays spooled)."""
        if self.orphan_drain is not None:
            self.orphan_drain.cancel()
            await asyncio.gather(self.orphan_drain, return_exceptions=True)
        if self._producer is not None:
            await self._producer.close()
        # The next call starts a new producer (a closed one cannot be restarted).
        self._producer, self._starting, self.orphan_drain = None, None, None
        self._loop = None


def _report_delivery(future: asyncio.Future[Delivery]) -> None:
    # Spooled is fine (resent later); only a record neither Kafka nor the spool took is lost.
    if not future.cancelled() and future.exception() is not None:
        CALLBACK_ERRORS.labels("delivery").inc()
        log.error("ledger: a LiteLLM usage event was not delivered: %s", future.exception())


# The instance a proxy config names: ``callbacks: integrations.litellm.ledger_callback``.
ledger_callback = LedgerCallback()
