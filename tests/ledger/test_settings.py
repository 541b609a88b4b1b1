from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from ledger.exceptions import SettingsError
from ledger.settings import Settings, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300ms", timedelta(milliseconds=300)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("2.5s", timedelta(seconds=2.5)),
        ("42", timedelta(seconds=42)),
    ],
)
def test_parse_duration_accepts_operator_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_defaults_match_what_gateway_operators_use(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "DB_MAX_OPEN_CONNS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.db_max_open_conns == 25
    assert s.db_max_idle_conns == 5
    assert s.db_conn_max_lifetime == timedelta(minutes=5)
    assert s.db_conn_max_idle_time == timedelta(minutes=1)
    assert s.cache_api_key_size == 1000
    assert s.cache_api_key_ttl == timedelta(minutes=5)
    assert s.cache_model_size == 500
    assert s.cache_model_ttl == timedelta(minutes=15)
    assert (s.topic_usage, s.topic_keys, s.topic_catalog) == (
        "ledger.usage", "ledger.keys", "ledger.catalog")
    assert s.topic_usage_partitions == 12


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_MAX_OPEN_CONNS", "7")
    monkeypatch.setenv("CACHE_API_KEY_TTL", "300ms")
    monkeypatch.setenv("TOPIC_USAGE", "gw.usage")
    s = load_settings()
    assert s.db_max_open_conns == 7
    assert s.cache_api_key_ttl == timedelta(milliseconds=300)
    assert s.topic_usage == "gw.usage"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("CACHE_MODEL_TTL", "soon", "300ms, 90s, 5m or 1h"),
        ("DB_CONN_MAX_LIFETIME", "5 minutes", "300ms, 90s, 5m or 1h"),
        ("DB_MAX_OPEN_CONNS", "lots", "integer"),
        ("CACHE_API_KEY_SIZE", "0", "greater than or equal to 1"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("variable", ["DATABASE_URL", "LEDGER_DATABASE_URL"])
def test_a_bad_database_url_names_the_variable_that_is_set(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    for name in ("DATABASE_URL", "LEDGER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "mysql://root:s3cret@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {variable}: not a PostgreSQL URL")
    assert "s3cret" not in str(info.value)


@pytest.mark.slow  # the CLI in a child process
def test_cli_reports_bad_setting_in_one_line_without_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "CACHE_MODEL_TTL": "forever"}
    result = subprocess.run(
        [sys.executable, "-m", "ops", "dev", "env"], env=env, capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CACHE_MODEL_TTL" in lines[0]
    assert "Traceback" not in result.stderr


def test_environment_round_trips_for_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(database_url="postgresql://u@h/db", cache_api_key_ttl="300ms",
                        topic_usage="gw.usage", kafka_bootstrap_servers="k:9092")
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in original.environment().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original


def test_timeout_defaults_bound_every_database_call(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DB_CONNECT_TIMEOUT", "DB_ACQUIRE_TIMEOUT", "DB_COMMAND_TIMEOUT",
                 "DB_STATEMENT_TIMEOUT", "DB_MIGRATE_STATEMENT_TIMEOUT", "AUTHORIZE_ON_DB_ERROR"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.db_connect_timeout == timedelta(seconds=5)
    assert s.db_acquire_timeout == timedelta(seconds=1)
    assert s.db_command_timeout == timedelta(seconds=2)
    assert s.db_statement_timeout == timedelta(seconds=60)
    assert s.db_migrate_statement_timeout == timedelta(minutes=15)
    assert s.authorize_on_db_error == "deny"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("DB_COMMAND_TIMEOUT", "0", "greater than"),  # the hot path is never unbounded
        ("DB_ACQUIRE_TIMEOUT", "never", "300ms, 90s, 5m or 1h"),
        ("AUTHORIZE_ON_DB_ERROR", "maybe", "'deny' or 'allow'"),
        ("DATABASE_URL", "garbage", "postgresql://"),
        ("DATABASE_URL", "mysql://u@h/db", "postgresql://"),
        ("DATABASE_URL", "postgresql://u@h:port/db", "port"),
    ],
)
def test_bad_timeout_or_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message and needle in message and "\n" not in message


def test_statement_timeouts_of_zero_mean_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "0")
    monkeypatch.setenv("DB_MIGRATE_STATEMENT_TIMEOUT", "0s")
    s = load_settings()
    assert s.db_statement_timeout == s.db_migrate_statement_timeout == timedelta(0)


def test_a_bad_database_url_is_reported_without_its_password(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ledger:s3cret@db:notaport/ledger")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "DATABASE_URL" in str(info.value) and "s3cret" not in str(info.value)
    assert "postgresql://ledger:***@db:notaport/ledger" in str(info.value)


@pytest.mark.parametrize(
    ("field", "plain", "prefixed"),
    [("database_url", "postgresql://litellm@db/litellm", "postgresql://ledger@db/ledger"),
     ("kafka_bootstrap_servers", "other:9092", "kafka:9092"),
     ("spool_dir", "/var/other", "/var/ledger-spool")],
)
def test_ledger_prefixed_names_win_over_the_plain_ones(
    monkeypatch: pytest.MonkeyPatch, field: str, plain: str, prefixed: str
) -> None:
    """A LiteLLM proxy owns DATABASE_URL: LEDGER_DATABASE_URL (and the other two) is read first."""
    monkeypatch.setenv(field.upper(), plain)
    assert str(getattr(load_settings(), field)) == plain
    monkeypatch.setenv(f"LEDGER_{field.upper()}", prefixed)
    settings = load_settings()
    assert str(getattr(settings, field)) == prefixed
    # A child process given environment() reads the same value whichever name it prefers.
    assert settings.environment()[f"LEDGER_{field.upper()}"] == prefixed
    assert settings.environment()[field.upper()] == prefixed


def test_a_bad_prefixed_database_url_is_named_and_redacted(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "mysql://ledger:s3cret@db/ledger")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "LEDGER_DATABASE_URL" in str(info.value) and "s3cret" not in str(info.value)
