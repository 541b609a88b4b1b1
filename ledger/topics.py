"""Topic administration: create the ledger's topics so they keep the whole history, and report
existing topics whose configuration differs from the settings.

A rebuild replays a topic from offset 0, so whatever the broker deletes is lost for good once
a rebuilt projection is swapped in. Topics are therefore created with ``retention.ms`` from
``TOPIC_RETENTION_MS`` (-1: forever), ``retention.bytes=-1`` and ``cleanup.policy=delete``
(compaction would keep only the last event of each key), and with the replication factor and
``min.insync.replicas`` from the settings. An existing topic is never altered — changing a
production topic's retention or replication is the operator's call — only reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from ledger.exceptions import TopicError
from ledger.kafka_metadata import forbid_topic_autocreation
from ledger.settings import Settings

forbid_topic_autocreation()  # asking about a topic must never create it


_ALREADY_EXISTS = 36  # TOPIC_ALREADY_EXISTS: another runner created it meanwhile, fine
_NOT_SET = "not set (broker default)"
_WHOLE_LOG = "fixed: a rebuild replays the whole log"
# Where each wanted topic config comes from, for the one-line difference reports.
CONFIG_SOURCES = {
    "retention.ms": "TOPIC_RETENTION_MS",
    "retention.bytes": _WHOLE_LOG,
    "cleanup.policy": _WHOLE_LOG,
    "min.insync.replicas": "TOPIC_MIN_INSYNC_REPLICAS",
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)
    partitions_setting: str = "requested"


@dataclass(frozen=True, slots=True)
class TopicDifference:
    """One way an existing topic differs from what the settings ask for."""

    topic: str
    what: str  # a topic config name, "partitions", "replication factor" or "topic"
    actual: str
    wanted: str
    source: str  # the setting that asks for ``wanted``, or why the ledger needs it

    def __str__(self) -> str:
        if self.what == "topic":
            return f"{self.topic}: {self.actual} ({self.source})"
        return f"{self.topic}: {self.what} is {self.actual}, wanted {self.wanted} ({self.source})"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    configs = {
        "retention.ms": str(settings.topic_retention_ms),
        "retention.bytes": "-1",
        "cleanup.policy": "delete",
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
    }

    def spec(name: str, partitions: int, setting: str) -> TopicSpec:
        return TopicSpec(name, partitions, settings.topic_replication_factor, configs, setting)

    return [
        spec(settings.topic_usage, settings.topic_usage_partitions, "TOPIC_USAGE_PARTITIONS"),
        spec(settings.topic_keys, settings.topic_keys_partitions, "TOPIC_KEYS_PARTITIONS"),
        spec(settings.topic_catalog, settings.topic_catalog_partitions,
             "TOPIC_CATALOG_PARTITIONS"),
        spec(settings.topic_alerts, settings.topic_alerts_partitions, "TOPIC_ALERTS_PARTITIONS"),
    ]


@asynccontextmanager
async def _admin(bootstrap_servers: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names this call created.

    Raises :class:`TopicError` (one line) when the broker refuses one.
    """
    async with _admin(bootstrap_servers) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics([
            NewTopic(spec.name, spec.partitions, spec.replication_factor,
                     topic_configs=dict(spec.configs))
            for spec in missing])
    answer = response.to_object()
    errors = creation_errors(answer)
    if errors:
        raise TopicError("; ".join(str(error) for error in errors))
    return [t["topic"] for t in answer["topic_errors"] if t["error_code"] == 0]


def creation_errors(response: Mapping[str, Any]) -> list[TopicError]:
    """The refusals in a CreateTopics response (aiokafka returns them, it does not raise)."""
    errors = []
    for topic in response["topic_errors"]:
        code = topic["error_code"]
        if code in (0, _ALREADY_EXISTS):
            continue
        why = topic.get("error_message") or for_code(code).message
        errors.append(TopicError(f"cannot create topic {topic['topic']}: {why}"))
    return errors


async def topic_differences(
    bootstrap_servers: str, specs: list[TopicSpec]
) -> list[TopicDifference]:
    """Every way the named topics differ from their specs; missing topics included."""
    async with _admin(bootstrap_servers) as admin:
        existing = set(await admin.list_topics())
        present = [spec for spec in specs if spec.name in existing]
        differences = [
            TopicDifference(spec.name, "topic", "missing", "present",
                            "`ledger topics ensure` creates it")
            for spec in specs if spec.name not in existing]
        if not present:
            return differences
        names = [spec.name for spec in present]
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        configs = await _topic_configs(admin, names)
    for spec in present:
        differences.extend(_compare(spec, described[spec.name], configs.get(spec.name, {})))
    return differences


async def _topic_configs(
    admin: AIOKafkaAdminClient, names: list[str]
) -> dict[str, dict[str, str]]:
    # Ask for every config: the embedded broker drops the connection when the request
    # names the configs it wants. It also lists only the configs set on the topic, where
    # Apache Kafka lists the broker defaults too; a config it does not list is "not set".
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise TopicError(f"cannot read the configuration of topic "
                                 f"{resource['resource_name']}: {resource['error_message']}")
            found[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"]
                for entry in resource["config_entries"]}
    return found


def _compare(
    spec: TopicSpec, described: Mapping[str, Any], configs: Mapping[str, str]
) -> list[TopicDifference]:
    differences = []
    partitions = described["partitions"]
    if len(partitions) != spec.partitions:
        differences.append(TopicDifference(spec.name, "partitions", str(len(partitions)),
                                           str(spec.partitions), spec.partitions_setting))
    replicas = min((len(p["replicas"]) for p in partitions), default=0)
    if replicas != spec.replication_factor:
        differences.append(TopicDifference(spec.name, "replication factor", str(replicas),
                                           str(spec.replication_factor),
                                           "TOPIC_REPLICATION_FACTOR"))
    for name, wanted in spec.configs.items():
        actual = configs.get(name)
        if actual != wanted:
            differences.append(TopicDifference(
                spec.name, name, _NOT_SET if actual is None else actual, wanted,
                CONFIG_SOURCES.get(name, "requested")))
    return differences


async def describe_topics(bootstrap_servers: str, names: list[str]) -> dict[str, int | None]:
    """Partition count of each named topic; None when it does not exist."""
    async with _admin(bootstrap_servers) as admin:
        existing = set(await admin.list_topics())
        present = [name for name in names if name in existing]
        counts: dict[str, int | None] = {name: None for name in names}
        if present:
            for topic in await admin.describe_topics(present):
                if topic["error_code"] == 0:
                    counts[topic["topic"]] = len(topic["partitions"])
        return counts
