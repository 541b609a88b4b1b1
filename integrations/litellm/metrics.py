"""Prometheus counters of the LiteLLM adapter, registered once per process."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from readmodels import Reason

CALLBACK_EVENTS = Counter(
    "ledger_litellm_callback_events_total",
    "UsageRecorded events the LiteLLM callback handed to the producer, by status",
    ["status"],
)
CALLBACK_ERRORS = Counter(
    "ledger_litellm_callback_errors_total",
    "LiteLLM callbacks that failed inside the ledger (logged; the request was not affected)",
    ["stage"],
)


class LoopCounts(Collector):
    """A counter family kept as plain ints and read at scrape time.

    For counts taken on the event loop's thread on every request: a prometheus_client
    ``Counter`` takes a lock on each ``inc()`` (1.2 us here, a twentieth of the auth hook),
    where ``counts[label] += 1`` costs 0.1 us. Only the loop's thread writes, so no
    increment is lost; a scrape (the HTTP server's thread) reads a copy.
    """

    def __init__(self, name: str, documentation: str, label: str, values: Iterable[str],
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self.counts: dict[str, int] = dict.fromkeys(values, 0)
        registry.register(self)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for label, count in list(self.counts.items()):  # copied in one step: no lock needed
            family.add_metric([label], count)
        yield family


_DECISIONS_NAME = "ledger_litellm_auth_decisions_total"
_DECISIONS_HELP = "custom_auth answers of the ledger's LiteLLM hook, by reason"

# prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as LiteLLM's proxy runs
# with several workers) exports only what its own metric classes write to the shared files:
# a collector's ints would not be seen there, so the decisions are a Counter in that mode.
AUTH_DECISIONS: LoopCounts | Counter
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    AUTH_DECISIONS = Counter(_DECISIONS_NAME, _DECISIONS_HELP, ["reason"])
    _children = {reason.value: AUTH_DECISIONS.labels(reason.value) for reason in Reason}

    def count_decision(reason: str) -> None:
        """Count one answer of the auth hook."""
        _children[reason].inc()
else:
    AUTH_DECISIONS = LoopCounts(_DECISIONS_NAME, _DECISIONS_HELP, "reason",
                                [reason.value for reason in Reason])
    _counts = AUTH_DECISIONS.counts

    def count_decision(reason: str) -> None:
        """Count one answer of the auth hook."""
        _counts[reason] += 1
