"""LiteLLM runs offline here: its bundled price map, never the remote one (set before import)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.readmodels.conftest import Writer

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LITELLM_TELEMETRY", "False")


@pytest.fixture
async def writer(pg_dsn: str) -> AsyncIterator[Writer]:
    """Rows written as the projector writes them (tests/readmodels/conftest.py's Writer)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield Writer(conn)
    finally:
        await conn.close()
