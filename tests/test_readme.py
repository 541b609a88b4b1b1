"""The README's Python examples run as written, against the real servers and projector."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.settings import Settings
from tests.polling import wait_until
from tests.projections.helpers import running_worker, wait_for_rows

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


async def _run(code: str, namespace: dict[str, Any]) -> None:
    wrapped = "async def __example():\n" + textwrap.indent(code, "    ") + \
        "\n    globals().update({k: v for k, v in locals().items()})\n"
    exec(compile(wrapped, "README.md", "exec"), namespace)
    await namespace["__example"]()


async def test_readme_examples(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("DATABASE_URL", settings.database_url),
                        ("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                        ("TOPIC_USAGE", settings.topic_usage), ("TOPIC_KEYS", settings.topic_keys),
                        ("TOPIC_CATALOG", settings.topic_catalog),
                        ("SPOOL_DIR", str(settings.resolved_spool_dir))):
        monkeypatch.setenv(name, str(value))
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:  # the catalog entry the examples resolve "openai/gpt-4o" and "4o" to
        await conn.execute(
            "INSERT INTO models (name, provider, mode, raw, valid_from) "
            "VALUES ('gpt-4o', 'openai', 'chat', '{}', now())")
        await conn.execute("INSERT INTO model_aliases (alias, model) VALUES ('4o', 'gpt-4o')")
    finally:
        await conn.close()
    emit, read, revoke = _blocks()
    namespace: dict[str, Any] = {}
    async with running_worker(settings, ("usage", "keys")):
        await _run(emit, namespace)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 1)
        # The keys and usage projections run apart: the usage row says nothing about the key.
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)
        await _run(read, namespace)  # raises PermissionError unless the key is allowed
        await _run(revoke, namespace)

        async def refused() -> bool:
            from readmodels import ReadModels

            async with ReadModels.open(settings) as rm:
                decision = await rm.keys.authorize(namespace["plaintext"], "gpt-4o")
            return decision.reason == "revoked"

        await wait_until(refused, 30, "the revoked key to be refused")
    assert namespace["model"].name == "gpt-4o"
