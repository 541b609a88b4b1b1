"""Keys projection: lifecycle in order, revocation is final, unknown keys dead-letter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from ledger.keys import hash_key
from ledger.producer import EventBuilder
from ledger.settings import Settings
from tests.projections.helpers import emit, fetchval, running_worker, wait_for_rows

build = EventBuilder("test")


async def test_key_lifecycle_follows_events_and_revocation_is_final(settings: Settings) -> None:
    key_id = uuid.uuid4()
    created = build.create_key(api_key_id=key_id, name="team-a", plaintext_key="sk-test-1",
                               owner="alice", allowed_models=["gpt-4o"],
                               max_budget_usd=Decimal("12.50"), metadata={"env": "prod"})
    events = [
        created,
        build.update_key(api_key_id=key_id, name="team-a2", max_budget_usd=None,
                         allowed_models=["gpt-4o", "claude-3-5-sonnet"]),
        build.set_key_metadata(api_key_id=key_id, key="tier", value="gold"),
        build.delete_key_metadata(api_key_id=key_id, key="env"),
        build.revoke_key(api_key_id=key_id, reason="leaked"),
        # After revocation nothing brings it back: a re-sent create, an update, metadata.
        created,
        build.update_key(api_key_id=key_id, enabled=True, name="resurrected"),
    ]
    await emit(settings, events)
    assert settings.database_url
    async with running_worker(settings, ("keys",)):
        await wait_for_rows(
            settings.database_url,
            "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints", len(events))
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        metadata = await conn.fetch(
            "SELECT key, value FROM key_metadata WHERE api_key_id = $1 ORDER BY key", key_id)
    finally:
        await conn.close()
    assert row is not None
    assert row["key_hash"] == hash_key("sk-test-1")
    assert row["name"] == "team-a2"
    assert row["owner"] == "alice"
    assert row["max_budget_usd"] is None  # explicit null cleared it
    assert row["allowed_models"] == ["gpt-4o", "claude-3-5-sonnet"]
    assert row["revoked_at"] is not None
    assert row["enabled"] is False
    assert [(m["key"], m["value"]) for m in metadata] == [("tier", "gold")]


async def test_event_for_unknown_key_is_dead_lettered(settings: Settings) -> None:
    ghost = uuid.uuid4()
    real = uuid.uuid4()
    await emit(settings, [
        build.revoke_key(api_key_id=ghost),
        build.create_key(api_key_id=real, name="real", plaintext_key="sk-test-2",
                         expires_at=datetime.now(UTC) + timedelta(days=1)),
    ])
    assert settings.database_url
    async with running_worker(settings, ("keys",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM dead_letters", 1)
    error = await fetchval(settings.database_url, "SELECT error FROM dead_letters")
    assert str(ghost) in error
    kind = await fetchval(settings.database_url, "SELECT error_kind FROM dead_letters")
    assert kind == "handler_error"
