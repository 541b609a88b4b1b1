"""docker-compose.yml is the production path; Docker is not here, so check it by reading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ledger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_services_are_postgres_kraft_kafka_and_the_projector() -> None:
    services = _compose()["services"]
    assert {"postgres", "kafka", "projector"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")  # the official image
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka["environment"]
    projector = services["projector"]
    assert projector["build"] == "."
    assert projector["command"][:2] == ["ledger", "project"]
    assert (ROOT / "Dockerfile").exists()


def test_ports_match_what_the_services_listen_on() -> None:
    services = _compose()["services"]
    assert "5432:5432" in services["postgres"]["ports"]
    assert any(p.endswith(":29092") for p in services["kafka"]["ports"])
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in listeners and "localhost:29092" in listeners


def test_ledger_services_use_only_real_setting_names() -> None:
    services = _compose()["services"]
    known = {name.upper() for name in Settings.model_fields}
    for name in ("projector", "migrate"):
        env = services[name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env[
            "DATABASE_URL"]
        Settings(**{k.lower(): v for k, v in env.items()})  # every value parses


def test_topic_settings_keep_history_and_fit_the_brokers_of_the_compose() -> None:
    services = _compose()["services"]
    brokers = [s for s in services.values() if str(s.get("image", "")).startswith(
        "apache/kafka:") and "broker" in s["environment"]["KAFKA_PROCESS_ROLES"]]
    for name in ("projector", "migrate"):
        env = services[name]["environment"]
        # Spelled out, so whoever deploys it sees what to change for production.
        assert {"TOPIC_RETENTION_MS", "TOPIC_REPLICATION_FACTOR",
                "TOPIC_MIN_INSYNC_REPLICAS"} <= set(env)
        settings = Settings(**{k.lower(): v for k, v in env.items()})
        assert settings.topic_retention_ms == -1  # a rebuild replays the log from offset 0
        # More replicas than brokers and `ledger topics ensure` fails to create the topics.
        assert settings.topic_replication_factor <= len(brokers)
        assert settings.topic_min_insync_replicas <= settings.topic_replication_factor
