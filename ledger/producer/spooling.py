"""The spool side of LedgerProducer: spooling records, parking refused ones, resending.

A mixin rather than a separate object because these steps share the producer's state (the
pending bound, the spooling flag, the sender) at every turn; it only keeps producer.py to
one screenful per concern.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ledger.exceptions import ProducerError, RecordRejectedError, SpoolError
from ledger.producer.metrics import SpoolStats, StallWatch
from ledger.producer.sending import Delivery, PendingBound, PendingItem, RecordSender
from ledger.producer.spool import Spool, park_rejected

log = logging.getLogger(__name__)


class SpoolingMixin:
    """Needs the attributes below, set by LedgerProducer.__init__."""

    spool_dir: Path | None
    resend_chunk: int
    resend_backoff_max_s: float
    _request_timeout_s: float
    _bound: PendingBound
    _spool: Spool | None
    _spool_lock: asyncio.Lock
    _spooling: bool
    _spool_has_data: asyncio.Event
    _spool_drained: asyncio.Event
    _wakeup: asyncio.Event
    _sender: RecordSender | None
    _stall: StallWatch
    _rejected_records: int

    async def _connect(self) -> None:
        raise NotImplementedError  # LedgerProducer connects aiokafka

    def spool_stats(self) -> SpoolStats | None:
        """The spool as the metrics report it; None without a spool. Still readable after
        close (what was left for the next start)."""
        spool = self._spool
        if spool is None:
            return None
        return SpoolStats(str(self.spool_dir), self._spooling, spool.pending_bytes,
                          spool.oldest_age_s(), self._stall.failures, self._rejected_records)

    # -- settling records ---------------------------------------------------------------

    def _release(self, count: int) -> None:
        self._bound.release(count)

    def _fail(self, items: list[PendingItem], error: BaseException) -> None:
        self._settle(items, lambda item: item.future.set_exception(error))

    def _settle(self, items: list[PendingItem], resolve: Callable[[PendingItem], None]) -> None:
        """Resolve each unsettled item once and give its place back to the pending bound."""
        resolved = 0
        for item in items:
            if not item.settled:
                item.settled = True
                resolved += 1
                if not item.future.done():
                    resolve(item)
        self._release(resolved)

    def _enter_spooling(self) -> None:
        self._spooling = True
        self._spool_drained.clear()
        self._spool_has_data.set()

    # -- the spool ---------------------------------------------------------------------

    async def _park(self, items: list[PendingItem]) -> None:
        """Keep records the broker refused for good in rejected/ and say so on their
        futures; if even that fails they go to the spool, to be refused and parked later."""
        assert self.spool_dir is not None
        records = [item.record for item in items if not item.settled]
        try:
            path = await asyncio.to_thread(park_rejected, self.spool_dir, records)
        except (OSError, SpoolError) as park_error:
            log.error("could not park %d refused records (%s); spooling them",
                      len(records), park_error)
            await self._spool_items(items)
            return
        self._rejected_records += len(records)
        log.error("broker refused %d records for good (too large on their own); kept in %s",
                  len(records), path)
        self._fail(items, RecordRejectedError(
            f"the broker refused the record for good (too large); it is kept in {path.parent}"))

    async def _spool_items(self, items: list[PendingItem]) -> None:
        if self._spool is None:
            self._fail(items, ProducerError("Kafka unreachable and no spool_dir configured"))
            return
        spool = self._spool
        records = [item.record for item in items if not item.settled]
        try:
            async with self._spool_lock:
                await asyncio.to_thread(spool.append, records)
        except (OSError, SpoolError) as error:
            # The one case where events are lost: neither Kafka nor the spool took them.
            log.error("%d events could not be spooled either and are lost: %s",
                      len(records), error)
            self._fail(items, ProducerError(f"spool write failed: {error}"))
            return
        self._enter_spooling()
        self._settle(items, lambda item: item.future.set_result(
            Delivery("spooled", item.record.topic)))

    async def _resend_loop(self) -> None:
        assert self._spool is not None
        spool = self._spool
        backoff = 0.1
        while True:
            await self._spool_has_data.wait()
            try:
                if self._sender is None:
                    await self._connect()
                assert self._sender is not None
                async with self._spool_lock:
                    records, next_offset = await asyncio.to_thread(spool.read, self.resend_chunk)
                    if not records:
                        # Drained: back to direct sends. Under the lock so that no append
                        # can slip in between the emptiness check and the switch.
                        self._spooling = False
                        self._spool_has_data.clear()
                        self._spool_drained.set()
                        self._wakeup.set()
                        continue
                rejected = await self._sender.resend(records, self._request_timeout_s)
                if rejected:
                    assert self.spool_dir is not None
                    path = await asyncio.to_thread(park_rejected, self.spool_dir, rejected)
                    self._rejected_records += len(rejected)
                    log.error("broker refused %d spooled records for good (too large on "
                              "their own); kept in %s", len(rejected), path)
                async with self._spool_lock:
                    await asyncio.to_thread(spool.commit, next_offset)
                self._stall.succeeded()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._stall.failed(error, spool.pending_bytes, spool.oldest_age_s(), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.resend_backoff_max_s)
