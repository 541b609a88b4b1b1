"""Who may write which SQL: ``projections/storage.py`` alone touches the checkpoint and
dead-letter tables and sends NOTIFY; the operator shell runs no query but the migrator's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_STORAGE_SQL = re.compile(
    r"(FROM|INTO|UPDATE|JOIN)\s+(projection_checkpoints|dead_letters)\b|pg_notify", re.I)
_QUERY_CALL = re.compile(r"\.(fetch|fetchval|fetchrow|execute|executemany|copy_\w+)\(")


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_only_the_storage_module_has_checkpoint_dead_letter_and_notify_sql() -> None:
    offenders = [str(path.relative_to(ROOT))
                 for package in ("ledger", "projections", "readmodels", "ops")
                 for path in _sources(package)
                 if path != ROOT / "projections" / "storage.py"
                 and _STORAGE_SQL.search(path.read_text())]
    assert offenders == []


def test_the_operator_shell_runs_no_query_but_the_migrators() -> None:
    offenders = [str(path.relative_to(ROOT)) for path in _sources("ops")
                 if path != ROOT / "ops" / "migrate.py" and _QUERY_CALL.search(path.read_text())]
    assert offenders == []
