"""The CLI's resolver (ledger.catalog.lookup) and the hot path's (ReadModels) must agree.

Two SQL statements implement the naming rule — the CLI needs the raw entry and which rule
matched, the hot path a small cached record — so this test keeps them from drifting apart.
"""

from __future__ import annotations

import asyncpg

from ledger.catalog.lookup import resolve
from readmodels import ReadModels

NAMES = [
    "gpt-4o",                      # exact name
    "4o",                          # alias
    "openai/gpt-4o",               # provider prefix
    "openai/4o",                   # provider prefix of an alias
    "azure_ai/gpt-astra-latest",   # an alias_of entry of the price map: its target
    "anthropic/gpt-4o",            # wrong provider
    "no-such-model",
]


async def test_cli_and_read_models_resolve_names_the_same_way(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO models (name, provider, mode, raw, valid_from) VALUES "
            "('gpt-4o', 'openai', 'chat', '{}', now()), "
            "('azure_ai/gpt-6-astra', 'azure_ai', 'chat', '{}', now()), "
            "('azure_ai/gpt-astra-latest', NULL, NULL, "
            "'{\"alias_of\": \"azure_ai/gpt-6-astra\"}', now())")
        await conn.execute(
            "INSERT INTO model_aliases (alias, model) VALUES ('4o', 'gpt-4o'), "
            "('azure_ai/gpt-astra-latest', 'azure_ai/gpt-6-astra')")
        by_cli = {}
        for name in NAMES:
            found = await resolve(conn, name)
            by_cli[name] = found.name if found else None
    finally:
        await conn.close()
    async with ReadModels.open(pg_dsn) as rm:
        by_hot_path = {}
        for name in NAMES:
            model = await rm.models.get_by_name(name)
            by_hot_path[name] = model.name if model else None
    assert by_cli == by_hot_path
    assert by_cli == {
        "gpt-4o": "gpt-4o", "4o": "gpt-4o", "openai/gpt-4o": "gpt-4o", "openai/4o": "gpt-4o",
        "azure_ai/gpt-astra-latest": "azure_ai/gpt-6-astra", "anthropic/gpt-4o": None,
        "no-such-model": None,
    }
