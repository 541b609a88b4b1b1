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
