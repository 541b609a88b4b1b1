"""Topic administration: create the ledger's topics with their partition counts."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ledger.settings import Settings


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(settings.topic_usage, settings.topic_usage_partitions),
        TopicSpec(settings.topic_keys, settings.topic_keys_partitions),
        TopicSpec(settings.topic_catalog, settings.topic_catalog_partitions),
    ]


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        # Another runner may create one between list and create; that is fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, 1) for spec in missing]
            )
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def describe_topics(bootstrap_servers: str, names: list[str]) -> dict[str, int | None]:
    """Partition count of each named topic; None when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [name for name in names if name in existing]
        counts: dict[str, int | None] = {name: None for name in names}
        if present:
            for topic in await admin.describe_topics(present):
                if topic["error_code"] == 0:
                    counts[topic["topic"]] = len(topic["partitions"])
        return counts
    finally:
        await admin.close()
