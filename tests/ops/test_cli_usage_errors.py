"""An invalid argument, for any command, is one line ``error: ...`` naming it, exit 1.

Arguments are checked before anything is opened, so no server is needed: the settings point
at a port where nothing listens, and a command that got past its checks would fail on it
with a different line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.test_cli_errors import KEY_ID, _env, _ledger

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"
BUDGET = ("budgets", "set", "owner:x", "--period", "day")


@pytest.mark.parametrize(("args", "named"), [
    (("cost", "gpt-4o", "--prompt", "-1"), "--prompt"),
    (("cost", "gpt-4o", "--no-such-option"), "--no-such-option"),
    (("keys", "create", "--name", "x", "--expires", "notadate"), "--expires"),
    (("keys", "create", "--name", "x", "--budget", "abc"), "--budget"),
    (("keys", "create", "--name", "x", "--budget", "-5"), "'--budget'"),
    (("keys", "create", "--name", ""), "'--name'"),
    (("keys", "create"), "--name"),
    (("keys", "show", "not-a-uuid"), "key_id"),
    (("reconcile", "--format", "xml"), "--format"),
    (("reconcile", "--month", "2024-13"), "--month"),
    (("usage", "report", "--by", "foo"), "--by"),
    (("usage", "report", "--month", "October"), "--month"),
    (("dlq", "replay"), "--all"),
    (("catalog", "import", "--file", "/nonexistent"), "--file"),
    (("budgets", "list", "--format", "xml"), "--format"),
    ((*BUDGET, "--limit", "0"), "--limit"),
    ((*BUDGET, "--limit", "ten"), "--limit"),
    ((*BUDGET, "--limit", "5", "--tz", "Mars/Base"), "--tz"),
    ((*BUDGET, "--limit", "5", "--alert", "50,x"), "--alert"),
    (("budgets", "set", "team:x", "--limit", "5", "--period", "day"), "scope"),
    (("budgets", "set", "owner:x", "--limit", "5", "--period", "year"), "--period"),
    (("no-such-command",), "no-such-command"),
    (("rebuild", KEY_ID, "extra"), "extra"),
])
def test_an_invalid_argument_is_one_line_naming_it(tmp_path: Path, args: tuple[str, ...],
                                                    named: str) -> None:
    result = _ledger(_env(tmp_path, DATABASE_URL=NOWHERE, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1"),
                     *args)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert named in lines[0], lines[0]
    assert "127.0.0.1:1" not in lines[0]  # refused before any server was asked


@pytest.mark.parametrize("args", [("--help",), ("keys", "create", "--help")])
def test_help_is_printed_and_exits_0(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _ledger(_env(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    assert "Usage: ledger" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("args", [(), ("keys",)])
def test_no_subcommand_prints_help_and_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Unchanged from click: the help, on stdout, with click's usage-error status."""
    result = _ledger(_env(tmp_path), *args)
    assert result.returncode == 2, result.stderr
    assert "Usage: ledger" in result.stdout
    assert result.stderr == ""
