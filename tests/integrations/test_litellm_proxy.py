"""The LiteLLM proxy itself, in-process (its ASGI app), configured with docs/litellm.md's
config.yaml: keys made by ``ledger keys create`` work, revoked keys and other models are
refused, and the calls are recorded."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from integrations.litellm import ledger_auth, ledger_callback
from ledger.settings import Settings
from tests.polling import wait_until
from tests.projections.helpers import running_worker, wait_for_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "litellm.md"
MASTER_KEY = "sk-" + secrets.token_hex(24)
REVOCATION_BOUND_S = 0.5
ANSWER = "Hello from the proxy"


def _config_from_the_docs() -> str:
    """docs/litellm.md's config.yaml as written, but for the upstream provider: each model
    answers with a canned response instead of calling OpenAI (no network here). The proxy
    ignores a client's ``mock_response`` in the body, so it goes into the deployment."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/litellm.md has one config.yaml block"
    config = yaml.safe_load(blocks[0])
    for deployment in config["model_list"]:
        deployment["litellm_params"]["mock_response"] = ANSWER
    return yaml.safe_dump(config)


def _ledger(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
async def proxy(settings: Settings, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    config = tmp_path / "config.yaml"
    config.write_text(_config_from_the_docs())
    monkeypatch.delenv("DATABASE_URL", raising=False)  # the proxy's own; it must not take ours
    for name, value in {
        "CONFIG_FILE_PATH": str(config), "LITELLM_MASTER_KEY": MASTER_KEY,
        "OPENAI_API_KEY": "sk-offline", "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "LEDGER_SPOOL_DIR": str(settings.resolved_spool_dir),
        "TOPIC_USAGE": settings.topic_usage, "TOPIC_KEYS": settings.topic_keys,
        "TOPIC_CATALOG": settings.topic_catalog,
    }.items():
        monkeypatch.setenv(name, str(value))
    from litellm.proxy.proxy_server import app

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            try:
                yield client
            finally:
                await ledger_callback.close()
                await ledger_auth.close()


async def _ask(client: httpx.AsyncClient, key: str, model: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": model,
                                   "messages": [{"role": "user", "content": "Hi"}]})


async def _revoked_at(dsn: str, key_id: str, timeout: float = 30.0) -> float:
    """The moment (time.monotonic) the revocation is seen committed in PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1",
                                   key_id):
                return time.monotonic()
            await asyncio.sleep(0.002)
    finally:
        await conn.close()
    raise AssertionError("the revocation was not projected")


async def test_ledger_keys_work_in_the_proxy_and_revocation_is_immediate(
    settings: Settings, proxy: httpx.AsyncClient
) -> None:
    assert settings.database_url
    env = {**os.environ, **settings.environment()}
    async with running_worker(settings, ("usage", "keys")):
        created = _ledger(env, "keys", "create", "--name", "proxy-user", "--models", "gpt-4o")
        key_id = re.search(r"key id:\s+(\S+)", created)
        plaintext = re.search(r"api key:\s+(\S+)", created)
        assert key_id and plaintext
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)

        answer = await _ask(proxy, plaintext[1], "gpt-4o")
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == ANSWER
        await wait_for_rows(settings.database_url,
                            f"SELECT count(*) FROM usage_records WHERE api_key_id = "
                            f"'{key_id[1]}' AND request_id = "
                            f"'{answer.headers['x-litellm-call-id']}'", 1)

        other_model = await _ask(proxy, plaintext[1], "gpt-4o-mini")
        assert other_model.status_code == 403, other_model.text
        unknown = await _ask(proxy, "sk-not-a-ledger-key", "gpt-4o")
        assert unknown.status_code == 401, unknown.text
        # What a client gets: the status, and LiteLLM's error body, whose ``code`` is the
        # status as a string; the reason is in provider_specific_fields (docs/litellm.md).
        assert other_model.json() == {"error": {
            "message": "ledger: this API key may not use this model", "type": "auth_error",
            "param": "api_key", "code": "403",
            "provider_specific_fields": {"ledger_reason": "model_not_allowed"}}}
        assert unknown.json() == {"error": {
            "message": "ledger: unknown API key", "type": "auth_error", "param": "api_key",
            "code": "401", "provider_specific_fields": {"ledger_reason": "unknown_key"}}}
        admin = await _ask(proxy, MASTER_KEY, "gpt-4o-mini")  # the proxy's own master key
        assert admin.status_code == 200, admin.text

        revoking = asyncio.create_task(_revoked_at(settings.database_url, key_id[1]))
        await asyncio.to_thread(_ledger, env, "keys", "revoke", key_id[1])
        committed = await revoking
        refused_after = None
        while time.monotonic() - committed < 5:
            response = await _ask(proxy, plaintext[1], "gpt-4o")
            if response.status_code == 401:
                assert "revoked" in response.text
                refused_after = time.monotonic() - committed
                break
            assert response.status_code == 200, response.text
        assert refused_after is not None and refused_after <= REVOCATION_BOUND_S, refused_after
        print(f"revocation committed -> refused by the proxy: {refused_after * 1000:.1f} ms")

        async def recorded() -> bool:
            conn = await asyncpg.connect(settings.database_url)
            try:
                row: Any = await conn.fetchrow(
                    "SELECT count(*) AS n, min(metadata->>'litellm_key_source') AS source "
                    "FROM usage_records WHERE api_key_id = $1", key_id[1])
            finally:
                await conn.close()
            return bool(row["n"] >= 1 and row["source"] == "ledger")

        await wait_until(recorded, 30, "the proxy's calls recorded under the ledger key")


def test_the_readme_shows_the_same_lines_as_the_tested_config() -> None:
    readme = (DOC.parents[1] / "README.md").read_text()
    [snippet] = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    shown = yaml.safe_load(snippet)
    [tested] = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    config = yaml.safe_load(tested)
    assert shown == {key: config[key] for key in ("litellm_settings", "general_settings")}
