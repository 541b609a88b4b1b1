"""Prometheus metrics of the read models' caches and listener, read at scrape time.

One collector per CollectorRegistry serves every ReadModels registered on it, each under its
own ``instance`` label: two collectors emitting the same metric names would collide in one
registry, and one family per name is what the exposition format expects.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from readmodels.exceptions import InvalidArgumentError, ReadModelsClosedError
from readmodels.readmodels import ReadModels

_PREFIX = "readmodels"
_LABELS = ["instance", "cache"]


class ReadModelsCollector(Collector):
    """Reports ``stats()`` of the ReadModels registered on one registry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run in the HTTP server's thread
        self._instances: dict[str, weakref.ref[ReadModels]] = {}

    def add(self, models: ReadModels, instance: str) -> None:
        with self._lock:
            current = self._instances.get(instance)
            if current is not None and current() is not None and current() is not models:
                raise InvalidArgumentError(f"instance label {instance!r} is already registered")
            self._instances[instance] = weakref.ref(models)

    def remove(self, instance: str) -> None:
        with self._lock:
            self._instances.pop(instance, None)

    def describe(self) -> list[Metric]:
        return []  # names are ours alone; nothing for the registry to check at register time

    def collect(self) -> Iterator[Metric]:
        counters = {
            name: CounterMetricFamily(f"{_PREFIX}_cache_{name}", text, labels=_LABELS)
            for name, text in (
                ("hits", "Cache lookups answered from memory (negative entries included)."),
                ("misses", "Cache lookups that had to load."),
                ("loads", "Database loads started (one per single-flight group)."),
                ("evictions", "Entries dropped for capacity or TTL expiry."),
                ("invalidations", "Entries evicted by an invalidation notification."),
            )
        }
        size = GaugeMetricFamily(f"{_PREFIX}_cache_size", "Entries held.", labels=_LABELS)
        rate = GaugeMetricFamily(f"{_PREFIX}_cache_hit_rate",
                                 "hits / (hits + misses) since start.", labels=_LABELS)
        listening = GaugeMetricFamily(f"{_PREFIX}_listener_up",
                                      "1 while LISTEN ledger_invalidate is active.",
                                      labels=["instance"])
        reconnects = CounterMetricFamily(f"{_PREFIX}_listener_reconnects",
                                         "Listener reconnections after a lost connection.",
                                         labels=["instance"])
        notifications = CounterMetricFamily(f"{_PREFIX}_notifications",
                                            "Invalidation notifications received.",
                                            labels=["instance"])
        unavailable = CounterMetricFamily(
            f"{_PREFIX}_authorize_unavailable",
            "authorize() answers not checked: PostgreSQL unreachable or too slow.",
            labels=["instance"])
        with self._lock:
            live = [(name, ref()) for name, ref in self._instances.items()]
        for instance, models in live:
            if models is None:
                continue
            try:
                stats = models.stats()
            except ReadModelsClosedError:
                continue
            for cache in stats.caches.values():
                labels = [instance, cache.name]
                for name, family in counters.items():
                    family.add_metric(labels, getattr(cache, name))
                size.add_metric(labels, cache.size)
                rate.add_metric(labels, cache.hit_rate)
            listening.add_metric([instance], 1.0 if stats.listening else 0.0)
            reconnects.add_metric([instance], stats.listener_reconnects)
            notifications.add_metric([instance], stats.notifications)
            unavailable.add_metric([instance], stats.authorize_unavailable)
        yield from counters.values()
        yield from (size, rate, listening, reconnects, notifications, unavailable)


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ReadModelsCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def register_metrics(
    models: ReadModels, registry: CollectorRegistry | None = None, *, instance: str = "default"
) -> ReadModelsCollector:
    """Expose ``models``' cache metrics on ``registry`` (the global one by default).

    Several ReadModels may share a registry as long as each has its own ``instance`` label.
    """
    target = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(target)
        if collector is None:
            collector = ReadModelsCollector()
            target.register(collector)
            _collectors[target] = collector
    collector.add(models, instance)
    return collector


def unregister_metrics(
    registry: CollectorRegistry | None = None, *, instance: str = "default"
) -> None:
    """Stop exposing the ReadModels registered under ``instance`` on ``registry``."""
    target = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(target)
    if collector is not None:
        collector.remove(instance)
