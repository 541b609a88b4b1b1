"""Prometheus metrics of the projector workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events_applied = Counter(
            "ledger_projector_events_applied_total", "Events applied to the projection",
            ["projection"], registry=self.registry)
        self.dead_letters = Counter(
            "ledger_projector_dead_letters_total", "Messages written to dead_letters",
            ["projection", "kind"], registry=self.registry)
        self.batch_size = Histogram(
            "ledger_projector_batch_size", "Messages per committed batch", ["projection"],
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000), registry=self.registry)
        self.batch_seconds = Histogram(
            "ledger_projector_batch_seconds", "Time to apply and commit one batch",
            ["projection"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.lag = Gauge(
            "ledger_projector_lag", "Fetch high watermark minus checkpoint",
            ["projection", "topic", "partition"], registry=self.registry)
        self.db_retries = Counter(
            "ledger_projector_db_retries_total",
            "Reconnects and batch retries after database errors",
            ["projection"], registry=self.registry)
        self.log_resets = Counter(
            "ledger_projector_log_resets_total",
            "Partitions replayed from the log start because the broker's log was replaced",
            ["projection"], registry=self.registry)
        self.broker_retries = Counter(
            "ledger_projector_broker_retries_total",
            "Attempts to reach the Kafka brokers that failed",
            ["projection"], registry=self.registry)
        self.repriced = Counter(
            "ledger_projector_repriced_total",
            "Usage events whose cost a catalog change re-priced (projections.repricing)",
            ["projection"], registry=self.registry)
        self.partitions_lost = Counter(
            "ledger_projector_partitions_lost_total",
            "Batches rolled back because another worker owned a partition",
            ["projection"], registry=self.registry)
