"""Topics keep the whole history: created with the settings' retention, replication and
min.insync.replicas, read back from the real broker; existing topics that differ are reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from ledger.exceptions import SettingsError, TopicError
from ledger.settings import Settings, load_settings
from ledger.topics import creation_errors, ensure_topics, topic_differences, topic_specs

WEEK_MS = str(7 * 24 * 3600 * 1000)  # Apache Kafka's default retention


def _fresh_topics(settings: Settings) -> Settings:
    """The same settings with topic names that do not exist on the broker yet."""
    suffix = uuid.uuid4().hex[:10]
    return settings.model_copy(update={"topic_usage": f"usage-{suffix}",
                                       "topic_keys": f"keys-{suffix}",
                                       "topic_catalog": f"catalog-{suffix}",
                                       "topic_alerts": f"alerts-{suffix}"})


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


async def _broker_view(bootstrap: str, topic: str) -> tuple[dict[str, str], int]:
    """(configs the broker reports, replicas of each partition) — straight from the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        [resource] = response.to_object()["resources"]
        configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
        [described] = await admin.describe_topics([topic])
        replicas = {len(p["replicas"]) for p in described["partitions"]}
    finally:
        await admin.close()
    assert len(replicas) == 1
    return configs, replicas.pop()


async def _create_raw(bootstrap: str, topic: NewTopic) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([topic])
    finally:
        await admin.close()


def test_topic_settings_default_to_keeping_everything_on_one_broker() -> None:
    s = Settings()
    assert (s.topic_retention_ms, s.topic_replication_factor, s.topic_min_insync_replicas) == (
        -1, 1, 1)


def test_min_insync_above_the_replication_factor_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("TOPIC_MIN_INSYNC_REPLICAS", "3")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "TOPIC_MIN_INSYNC_REPLICAS" in message and "\n" not in message


async def test_topics_ensure_creates_topics_that_never_expire(settings: Settings) -> None:
    fresh = _fresh_topics(settings)
    result = _ledger(fresh, "topics", "ensure")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(created)") == 4  # usage, keys, catalog, alerts
    assert settings.kafka_bootstrap_servers
    for spec in topic_specs(fresh):
        configs, replicas = await _broker_view(settings.kafka_bootstrap_servers, spec.name)
        assert configs["retention.ms"] == "-1"
        assert configs["retention.bytes"] == "-1"
        assert configs["cleanup.policy"] == "delete"
        assert configs["min.insync.replicas"] == "1"
        assert replicas == 1
    again = _ledger(fresh, "topics", "ensure")  # repeatable, and nothing differs
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(exists)") == 4 and again.stderr == ""


async def test_replication_and_min_insync_come_from_the_settings(settings: Settings) -> None:
    # Tansu accepts any replication factor on its single node, so this checks what we ask for.
    wanted = _fresh_topics(settings).model_copy(update={
        "topic_replication_factor": 3, "topic_min_insync_replicas": 2,
        "topic_retention_ms": 90 * 24 * 3600 * 1000})
    assert settings.kafka_bootstrap_servers
    created = await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(wanted))
    assert sorted(created) == sorted(spec.name for spec in topic_specs(wanted))
    configs, replicas = await _broker_view(settings.kafka_bootstrap_servers, wanted.topic_usage)
    assert (configs["retention.ms"], configs["min.insync.replicas"], replicas) == (
        str(90 * 24 * 3600 * 1000), "2", 3)
    assert await topic_differences(settings.kafka_bootstrap_servers, topic_specs(wanted)) == []


async def test_an_existing_topic_with_a_week_of_retention_is_reported(
    settings: Settings,
) -> None:
    fresh = _fresh_topics(settings)
    assert settings.kafka_bootstrap_servers
    await _create_raw(settings.kafka_bootstrap_servers, NewTopic(
        fresh.topic_usage, fresh.topic_usage_partitions, 1,
        topic_configs={"retention.ms": WEEK_MS, "retention.bytes": "-1",
                       "cleanup.policy": "delete", "min.insync.replicas": "1"}))

    ensure = _ledger(fresh, "topics", "ensure")
    assert ensure.returncode == 2, ensure.stderr  # created the others, but one topic differs
    assert ensure.stdout.count("(created)") == 3
    lines = ensure.stderr.strip().splitlines()
    assert len(lines) == 1, ensure.stderr
    assert fresh.topic_usage in lines[0] and "retention.ms" in lines[0]
    assert WEEK_MS in lines[0] and "TOPIC_RETENTION_MS" in lines[0]

    status = _ledger(fresh, "status")
    assert status.returncode == 0, status.stderr
    reported = [line for line in status.stdout.splitlines() if "retention.ms" in line]
    assert len(reported) == 1 and fresh.topic_usage in reported[0] and WEEK_MS in reported[0]


async def test_an_existing_topic_without_the_settings_is_reported_per_setting(
    settings: Settings,
) -> None:
    """A topic created before these settings existed: nothing set, every config differs."""
    fresh = _fresh_topics(settings)
    assert settings.kafka_bootstrap_servers
    await _create_raw(settings.kafka_bootstrap_servers, NewTopic(fresh.topic_keys, 2, 1))
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(fresh))
    found = await topic_differences(settings.kafka_bootstrap_servers, topic_specs(fresh))
    assert {(d.topic, d.what) for d in found} == {
        (fresh.topic_keys, what) for what in
        ("partitions", "retention.ms", "retention.bytes", "cleanup.policy",
         "min.insync.replicas")}
    assert all("\n" not in str(d) for d in found)


async def test_status_reports_a_missing_topic(settings: Settings) -> None:
    fresh = _fresh_topics(settings)
    status = _ledger(fresh, "status")
    assert status.returncode == 0, status.stderr
    assert sum(1 for line in status.stdout.splitlines() if "missing" in line) == 4


def test_a_topic_the_broker_refuses_to_create_is_one_line() -> None:
    # Tansu creates anything it is asked to, so the refusal comes as a real Kafka answers it.
    response: dict[str, Any] = {"throttle_time_ms": 0, "topic_errors": [
        {"topic": "ledger.usage", "error_code": 38,
         "error_message": "Replication factor: 3 larger than available brokers: 1."},
        {"topic": "ledger.keys", "error_code": 36, "error_message": "already exists"},
        {"topic": "ledger.catalog", "error_code": 0, "error_message": None}]}
    [error] = creation_errors(response)
    assert isinstance(error, TopicError)
    assert "ledger.usage" in str(error) and "larger than available brokers" in str(error)
    assert "\n" not in str(error)
