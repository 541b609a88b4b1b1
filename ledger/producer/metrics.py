"""Prometheus metrics of the producers' spools, read at scrape time.

A stalled spool must be visible without anyone reading logs: its size and the age of its
oldest record grow while the broker cannot be reached. Every started producer with a
spool is reported on the global registry (the one a gateway's ``/metrics`` serves) under
its ``spool_dir`` label, which is unique because a spool directory is locked by one
producer; a closed producer is no longer reported. Values are read when scraped, so the
hot path pays nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class SpoolStats(NamedTuple):
    """A producer's spool, as a gauge would show it."""

    spool_dir: str
    spooling: bool
    pending_bytes: int
    oldest_age_s: float
    resend_failures: int
    rejected_records: int


class ReportsSpool(Protocol):
    def spool_stats(self) -> SpoolStats | None: ...


class SpoolCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run in the HTTP server's thread
        self._producers: weakref.WeakSet[ReportsSpool] = weakref.WeakSet()

    def add(self, producer: ReportsSpool) -> None:
        with self._lock:
            self._producers.add(producer)

    def remove(self, producer: ReportsSpool) -> None:
        with self._lock:
            self._producers.discard(producer)

    def describe(self) -> list[Metric]:
        return []  # names are ours alone; nothing for the registry to check at register time

    def collect(self) -> Iterator[Metric]:
        labels = ["spool_dir"]
        spooling = GaugeMetricFamily(
            "ledger_producer_spooling",
            "1 while new events go to the spool instead of Kafka.", labels=labels)
        size = GaugeMetricFamily(
            "ledger_producer_spool_bytes", "Bytes of spooled events not yet resent.",
            labels=labels)
        age = GaugeMetricFamily(
            "ledger_producer_spool_oldest_age_seconds",
            "Age of the oldest spooled event not yet resent (0 when the spool is empty).",
            labels=labels)
        failures = CounterMetricFamily(
            "ledger_producer_spool_resend_failures",
            "Attempts to resend the spool that failed (the spool waits and retries).",
            labels=labels)
        rejected = CounterMetricFamily(
            "ledger_producer_records_rejected",
            "Records the broker refused for good, parked in spool_dir/rejected.",
            labels=labels)
        with self._lock:
            producers = list(self._producers)
        for producer in producers:
            stats = producer.spool_stats()
            if stats is None:
                continue
            label = [stats.spool_dir]
            spooling.add_metric(label, 1.0 if stats.spooling else 0.0)
            size.add_metric(label, stats.pending_bytes)
            age.add_metric(label, stats.oldest_age_s)
            failures.add_metric(label, stats.resend_failures)
            rejected.add_metric(label, stats.rejected_records)
        yield from (spooling, size, age, failures, rejected)


_collector: SpoolCollector | None = None
_collector_lock = threading.Lock()


def spool_collector() -> SpoolCollector:
    """The one collector on the global registry, registered on first use."""
    global _collector
    with _collector_lock:
        if _collector is None:
            _collector = SpoolCollector()
            REGISTRY.register(_collector)
        return _collector


class StallWatch:
    """Failed resend attempts of one spool, and the rate-limited WARNING they deserve.

    Every attempt is logged at DEBUG; while events wait in the spool, a WARNING with its
    size, the age of its oldest event and the last error goes out on the first failure and
    then at most once per ``interval_s``, however long the broker stays away.
    """

    def __init__(self, spool_dir: str, interval_s: float, log: logging.Logger) -> None:
        self.spool_dir = spool_dir
        self.interval_s = interval_s
        self.failures = 0
        self._log = log
        self._stalled_since: float | None = None
        self._last_warning: float | None = None

    def failed(self, error: BaseException, pending_bytes: int, oldest_age_s: float,
               retry_in_s: float) -> None:
        self.failures += 1
        now = time.monotonic()
        self._log.debug("spool resend failed (%s: %s); retrying in %.1fs",
                        type(error).__name__, error, retry_in_s)
        if pending_bytes == 0:
            return  # nothing waits: the broker is away, but no event is held up
        if self._stalled_since is None:
            self._stalled_since = now
        if self._last_warning is None or now - self._last_warning >= self.interval_s:
            self._last_warning = now
            self._log.warning(
                "spool %s cannot drain: %d bytes waiting, the oldest spooled %.1fs ago, "
                "%d failed attempts over %.1fs; last error: %s: %s",
                self.spool_dir, pending_bytes, oldest_age_s, self.failures,
                now - self._stalled_since, type(error).__name__, error)

    def succeeded(self) -> None:
        if self._stalled_since is not None:
            self._log.info("spool %s drains again after %.1fs stalled",
                              self.spool_dir, time.monotonic() - self._stalled_since)
        self._stalled_since = None
        self._last_warning = None
