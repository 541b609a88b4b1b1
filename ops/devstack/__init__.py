"""The embedded dev stack: PostgreSQL and a Kafka-compatible broker started from wheels."""

from ops.devstack.broker import EmbeddedBroker
from ops.devstack.postgres import EmbeddedPostgres
from ops.devstack.stack import DevStack, ServiceState, StackState

__all__ = ["DevStack", "EmbeddedBroker", "EmbeddedPostgres", "ServiceState", "StackState"]
