"""Every CLI failure an operator can cause is one line on stderr naming what is wrong.

Run as an operator would: a subprocess with the environment set. Nothing listens on the free
ports used as "unreachable" (refused at once). ``timeout`` is a hang guard, nothing is timed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.exceptions import UnpricedUsageError, UnsupportedSchemaVersionError
from ledger.pricing import CostBreakdown
from ledger.settings import PREFIXED_FIELDS, Settings, load_settings
from ops.cli import context
from ops.cli.errors import explain
from ops.devstack.ports import free_port
from tests.test_exceptions import error_classes

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

HANG_GUARD_S = 30
KEY_ID = "00000000-0000-4000-8000-000000000000"

# Every command that reads PostgreSQL.
DATABASE_COMMANDS = [
    ("migrate",), ("status",), ("keys", "list"), ("keys", "show", KEY_ID), ("dlq", "list"),
    ("dlq", "replay", "--all"), ("usage", "report"), ("models", "search", "gpt"),
    ("models", "show", "gpt-4o"), ("rebuild", "keys"), ("catalog", "import", "--dry-run"),
    ("budgets", "list"), ("budgets", "alerts"),
    ("budgets", "set", "owner:x", "--limit", "1", "--period", "day"),
]
# Every command that talks to Kafka once PostgreSQL has answered (or without it).
KAFKA_COMMANDS = [("topics", "ensure"), ("status",), ("rebuild", "keys")]
# Connection settings asyncpg cannot use, found before it connects: an option it refuses, a
# certificate file it cannot read (a plain FileNotFoundError), with what the line must say.
UNUSABLE_SETTINGS = [("sslmode=bogus", ("sslmode",)),
                     ("sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
                      ("sslrootcert", "No such file"))]


def _instance(cls: type[BaseException]) -> BaseException:
    """One instance of an error class, with a two-line message where it takes one."""
    if cls is UnsupportedSchemaVersionError:
        return cls("usage.recorded", 9, 3)
    if cls is UnpricedUsageError:
        return cls(CostBreakdown(model="m", lines=(), total=Decimal(0), unpriced=("images",)))
    return cls("it failed\n  on two lines")


def test_every_error_of_the_four_packages_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The boundary knows every LedgerError; a read-model error also names the server."""
    url = "postgresql://ledger:s3cret@db.example:5432/ledger"
    monkeypatch.setattr(context, "settings", lambda: load_settings(database_url=url))
    monkeypatch.setattr(context, "database_url", lambda: url)
    for cls in error_classes():
        line = explain(_instance(cls))
        assert line is not None and "\n" not in line, cls
        assert "s3cret" not in line
        if cls.__module__ == "readmodels.exceptions":
            assert line.startswith("PostgreSQL at postgresql://ledger:***@db.example"), line


def _ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_S, check=False, stdin=subprocess.DEVNULL)


def _env(home: Path, **settings: str) -> dict[str, str]:
    """The environment without any ledger setting of the caller, plus ``settings``."""
    names = {name.upper() for name in Settings.model_fields}
    names |= {f"LEDGER_{name.upper()}" for name in PREFIXED_FIELDS}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(LEDGER_HOME=str(home), SPOOL_DIR=str(home / "spool"), COLUMNS="200", **settings)
    return env


def _one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode not in (0, None), result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def unreachable() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("args", [*DATABASE_COMMANDS, ("project",), ("cost", "gpt-4o"),
                                  ("keys", "create", "--name", "x"), ("dev", "status")])
def test_a_database_url_that_is_not_a_url(tmp_path: Path, unreachable: str,
                                          args: tuple[str, ...]) -> None:
    env = _env(tmp_path, DATABASE_URL="garbage", KAFKA_BOOTSTRAP_SERVERS=unreachable)
    _one_line(_ledger(env, *args), "DATABASE_URL", "garbage")


@pytest.mark.parametrize("variable", ["DATABASE_URL", "LEDGER_DATABASE_URL"])
def test_a_bad_database_url_names_the_variable_set(tmp_path: Path, variable: str) -> None:
    env = _env(tmp_path, **{variable: "mysql://root:s3cret@db/x"})
    line = _one_line(_ledger(env, "keys", "list"), f"invalid setting {variable}: ")
    assert "s3cret" not in line


@pytest.mark.parametrize("variable", ["DATABASE_URL", "LEDGER_DATABASE_URL"])
def test_an_unreachable_database_names_the_variable_set(tmp_path: Path, unreachable: str,
                                                        variable: str) -> None:
    env = _env(tmp_path, **{variable: f"postgresql://ledger@{unreachable}/ledger"})
    line = _one_line(_ledger(env, "keys", "list"), f"({variable})")
    if variable == "DATABASE_URL":
        assert "LEDGER_DATABASE_URL" not in line


@pytest.mark.parametrize("variable", ["KAFKA_BOOTSTRAP_SERVERS", "LEDGER_KAFKA_BOOTSTRAP_SERVERS"])
def test_an_unreachable_broker_names_the_variable_set(tmp_path: Path, unreachable: str,
                                                      variable: str) -> None:
    env = _env(tmp_path, **{variable: unreachable})
    line = _one_line(_ledger(env, "topics", "ensure"), f"Kafka at {unreachable} ({variable})")
    if variable == "KAFKA_BOOTSTRAP_SERVERS":
        assert "LEDGER_KAFKA" not in line


@pytest.mark.parametrize("args", DATABASE_COMMANDS)
def test_an_unreachable_database(tmp_path: Path, unreachable: str,
                                 args: tuple[str, ...]) -> None:
    url = f"postgresql://ledger:s3cret@{unreachable}/ledger"
    env = _env(tmp_path, DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=unreachable)
    line = _one_line(_ledger(env, *args), "PostgreSQL", unreachable)
    assert "s3cret" not in line


@pytest.mark.parametrize("args", KAFKA_COMMANDS)
def test_an_unreachable_broker(tmp_path: Path, unreachable: str, pg_dsn: str,
                               args: tuple[str, ...]) -> None:
    env = _env(tmp_path, DATABASE_URL=pg_dsn, KAFKA_BOOTSTRAP_SERVERS=unreachable)
    _one_line(_ledger(env, *args), "Kafka", unreachable, "KAFKA_BOOTSTRAP_SERVERS")


@pytest.mark.parametrize(("option", "named"), UNUSABLE_SETTINGS)
@pytest.mark.parametrize("args", [*DATABASE_COMMANDS, ("project",)])
def test_a_connection_option_the_driver_refuses_is_a_settings_error(
    tmp_path: Path, unreachable: str, pg_dsn: str, args: tuple[str, ...], option: str,
    named: tuple[str, ...]
) -> None:
    """The server is up; asyncpg refuses the option before connecting. One line naming the
    option and the variable, exit 1 as for the other settings errors; never "unavailable",
    and ``ledger project`` exits instead of retrying what can never work."""
    env = _env(tmp_path, DATABASE_URL=f"{pg_dsn}?{option}",
               KAFKA_BOOTSTRAP_SERVERS=unreachable)
    result = _ledger(env, *args)
    line = _one_line(result, *named, "DATABASE_URL")
    assert result.returncode == 1
    assert "unavailable" not in line


def test_a_negative_budget_names_the_option(tmp_path: Path, settings: Settings) -> None:
    env = {**_env(tmp_path), **settings.environment()}
    result = _ledger(env, "keys", "create", "--name", "x", "--budget", "-5")
    assert result.returncode == 1
    assert result.stderr == ("error: Invalid value for '--budget': Input should be greater "
                             "than or equal to 0 (got -5)\n")
    assert "api key" not in result.stdout  # nothing was created, no key shown


def test_a_migration_that_is_missing_says_so(tmp_path: Path, empty_pg_dsn: str) -> None:
    env = _env(tmp_path, DATABASE_URL=empty_pg_dsn)
    _one_line(_ledger(env, "dlq", "list"), "dead_letters", "ledger migrate")


def test_cost_falls_back_to_the_snapshot_when_the_database_is_unreachable(
    tmp_path: Path, unreachable: str
) -> None:
    # Documented: prices come from the packaged snapshot then, and the output says why.
    env = _env(tmp_path, DATABASE_URL=f"postgresql://postgres@{unreachable}/x")
    result = _ledger(env, "cost", "gpt-4o", "--prompt", "10")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ("database not reachable (cannot connect to PostgreSQL at "
            f"postgresql://postgres@{unreachable}/x") in result.stdout


@pytest.mark.parametrize(("option", "named"), UNUSABLE_SETTINGS)
def test_cost_names_a_wrong_database_setting_then_falls_back_to_the_snapshot(
    tmp_path: Path, pg_dsn: str, option: str, named: tuple[str, ...]
) -> None:
    """The server is up and the setting can never work: the prices line says which setting
    is wrong and where it came from, not "not reachable"; the cost is still given."""
    env = _env(tmp_path, DATABASE_URL=f"{pg_dsn}?{option}")
    result = _ledger(env, "cost", "gpt-4o", "--prompt", "10")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    prices = [line for line in result.stdout.splitlines() if line.startswith("prices: ")]
    assert len(prices) == 1 and "packaged snapshot" in prices[0], result.stdout
    assert "not reachable" not in prices[0]
    for needle in ("database setting", *named, "(DATABASE_URL)"):
        assert needle in prices[0], prices[0]
    assert result.stdout.splitlines()[-1] == "total 0.000025 USD"


def test_project_keeps_retrying_an_unreachable_database(tmp_path: Path,
                                                        unreachable: str) -> None:
    """A guard for the boundary: `ledger project` waits for PostgreSQL instead of exiting."""
    env = _env(tmp_path, DATABASE_URL=f"postgresql://postgres@{unreachable}/x",
               KAFKA_BOOTSTRAP_SERVERS=unreachable)
    worker = subprocess.Popen([sys.executable, "-m", "ops", "project", "-p", "keys"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    try:
        assert worker.stderr is not None
        retries = 0
        for line in worker.stderr:
            if "database unavailable" in line and "retrying" in line:
                retries += 1
                if retries == 2:
                    break
        assert retries == 2 and worker.poll() is None  # still running, retrying
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=HANG_GUARD_S) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
