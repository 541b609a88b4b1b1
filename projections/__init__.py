"""Projector workers: Kafka topics -> PostgreSQL tables, exactly once in effect."""

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
