"""The embedded dev stack: PostgreSQL and a Kafka-compatible broker started from wheels."""

from ledger.devstack.broker import EmbeddedBroker
from ledger.devstack.postgres import EmbeddedPostgres
from ledger.devstack.stack import DevStack, ServiceState, StackState

__all__ = ["DevStack", "EmbeddedBroker", "EmbeddedPostgres", "ServiceState", "StackState"]
