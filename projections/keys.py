"""KeysProjection: api_keys and key_metadata follow the ApiKey* and KeyMetadata* events.

A revoked key never comes back: updates and metadata changes to it are ignored, and a
re-delivered ApiKeyCreated never overwrites an existing row.
"""

from __future__ import annotations

import asyncpg

from ledger.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyUpdated,
    BudgetRemoved,
    BudgetSet,
    EventBase,
    KeyMetadataDeleted,
    KeyMetadataSet,
)
from ledger.invalidation import Invalidation
from ledger.settings import Settings
from projections import budgets
from projections.sequential import HandlerError, SequentialProjection

_UPDATABLE = ("name", "owner", "allowed_models", "max_budget_usd", "expires_at", "enabled")


def _changed(key_id: str, key_hash: str) -> Invalidation:
    return Invalidation(key_hashes=frozenset({key_hash}), key_ids=frozenset({key_id}))


class KeysProjection(SequentialProjection):
    name = "keys"

    def topic(self, settings: Settings) -> str:
        return settings.topic_keys

    def tables(self) -> tuple[str, ...]:
        return ("api_keys", "key_metadata")

    async def apply_one(self, conn: asyncpg.Connection, event: EventBase) -> Invalidation:
        if isinstance(event, ApiKeyCreated):
            return await self._created(conn, event)
        if isinstance(event, BudgetSet | BudgetRemoved):
            if self.rebuilding:  # budgets are not among the tables a keys rebuild replaces
                return Invalidation()
            return await budgets.apply_budget_event(conn, event)
        key_id = getattr(event, "api_key_id", None)
        key_hash = await conn.fetchval(
            "SELECT key_hash FROM api_keys WHERE id = $1 FOR UPDATE", key_id)
        if key_hash is None:
            raise HandlerError(f"{event.type} for unknown api key {key_id}")
        if isinstance(event, ApiKeyRevoked):
            await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2), enabled = false, "
                "updated_at = $2 WHERE id = $1", event.api_key_id, event.occurred_at)
        elif isinstance(event, ApiKeyUpdated):
            moved = {"owner", "max_budget_usd"} & event.changes().keys()
            old_owner = await budgets.owner_of(conn, event.api_key_id) if moved else None
            if moved and not self.rebuilding:
                await budgets.lock_out_usage(conn)
            await self._updated(conn, event)
            if moved and not self.rebuilding:
                # The key's spend now counts towards other ceilings: recount them.
                await budgets.recompute(conn, budgets.key_scopes(
                    event.api_key_id, old_owner, await budgets.owner_of(conn, event.api_key_id)))
        elif isinstance(event, KeyMetadataSet):
            await conn.execute(
                "INSERT INTO key_metadata (api_key_id, key, value, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (api_key_id, key) "
                "DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                event.api_key_id, event.key, event.value, event.occurred_at)
        elif isinstance(event, KeyMetadataDeleted):
            await conn.execute(
                "DELETE FROM key_metadata WHERE api_key_id = $1 AND key = $2",
                event.api_key_id, event.key)
        else:
            raise HandlerError(f"{event.type} does not belong on the keys topic")
        return _changed(str(key_id), str(key_hash))

    async def _created(self, conn: asyncpg.Connection, event: ApiKeyCreated) -> Invalidation:
        inserted = await conn.fetchval(
            "INSERT INTO api_keys (id, key_hash, name, owner, enabled, expires_at, allowed_models,"
            " max_budget_usd, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            event.api_key_id, event.key_hash, event.name, event.owner, event.enabled,
            event.expires_at, list(event.allowed_models), event.max_budget_usd, event.occurred_at)
        if inserted is not None and not self.rebuilding and (
                event.max_budget_usd is not None or event.owner is not None):
            # Usage may have arrived before the key (usage_records keeps unknown keys'):
            # its ceilings start from what is already there.
            await budgets.lock_out_usage(conn)
            await budgets.recompute(conn, budgets.key_scopes(event.api_key_id, event.owner))
        if inserted is not None and event.metadata:
            await conn.executemany(
                "INSERT INTO key_metadata (api_key_id, key, value, updated_at) "
                "VALUES ($1, $2, $3, $4)",
                [(event.api_key_id, k, v, event.occurred_at) for k, v in event.metadata.items()])
        return _changed(str(event.api_key_id), event.key_hash)

    async def _updated(self, conn: asyncpg.Connection, event: ApiKeyUpdated) -> None:
        changes = {k: v for k, v in event.changes().items() if k in _UPDATABLE}
        if not changes:
            return
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=3))
        values = [list(v) if isinstance(v, list | tuple) else v for v in changes.values()]
        await conn.execute(
            f"UPDATE api_keys SET {assignments}, updated_at = $2 "
            "WHERE id = $1 AND revoked_at IS NULL",
            event.api_key_id, event.occurred_at, *values)
