"""Projector workers: Kafka topics -> PostgreSQL tables, exactly once in effect."""

from ledger.kafka_metadata import forbid_topic_autocreation
from projections.base import ApplyResult, Envelope, Failure, Projection
from projections.exceptions import (
    PartitionLostError,
    ProjectionError,
    RebalanceFailedError,
    RebuildError,
    UnknownProjectionError,
)
from projections.registry import PROJECTION_NAMES, make_projection
from projections.runner import ProjectionRunner
from projections.unreadable import install as _install_unreadable_guard
from projections.worker import ProjectorWorker

__all__ = [
    "PROJECTION_NAMES",
    "ApplyResult",
    "Envelope",
    "Failure",
    "PartitionLostError",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectorWorker",
    "RebalanceFailedError",
    "RebuildError",
    "UnknownProjectionError",
    "make_projection",
]

# Every consumer in a process that uses this package (workers, rebuild, status, replay)
# turns a record batch it cannot decode into one dead letter instead of a stuck partition.
_install_unreadable_guard()
forbid_topic_autocreation()  # the ledger's topics come from `ledger topics ensure` only
