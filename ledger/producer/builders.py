"""Convenience builders for the gateway path: they fill the envelope so callers don't.

Each builder sets a fresh uuid4 ``event_id``, ``occurred_at`` = now (UTC) unless given, and
``source``. ``EventBuilder(source)`` binds the source once; ``LedgerProducer.events`` is one
bound to the producer's configured source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal, TypeVar, cast
from uuid import UUID, uuid4

from ledger import budgets
from ledger.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyUpdated,
    BudgetRemoved,
    BudgetSet,
    EventBase,
    KeyMetadataDeleted,
    KeyMetadataSet,
    UsageRecorded,
)
from ledger.keys import hash_key


class _Unset:
    """Marks "leave unchanged" in update_key, distinct from None which clears a field."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

_E = TypeVar("_E", bound=EventBase)


def _validated(cls: type[_E], fields: dict[str, Any]) -> _E:
    # The model's validator directly: BaseModel.__init__'s Python wrapper costs about half
    # as much again, which shows on the gateway's per-request path. Same validation.
    return cast(_E, cls.__pydantic_validator__.validate_python(fields))


class EventBuilder:
    """Builds events with a fixed ``source``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _envelope(self, occurred_at: datetime | None, **fields: Any) -> dict[str, Any]:
        fields["event_id"] = uuid4()
        fields["occurred_at"] = occurred_at if occurred_at is not None else datetime.now(UTC)
        fields["source"] = self.source
        return fields

    def usage(
        self,
        *,
        api_key_id: UUID | str,
        request_id: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        status: Literal["success", "error"] = "success",
        occurred_at: datetime | None = None,
        **fields: Any,
    ) -> UsageRecorded:
        """A UsageRecorded; ``fields`` are the optional counters (``images``: input images,
        ``output_images``: images the model generated), cost_usd, metadata, and how
        the request was served: ``service_tier`` ("priority", "flex", "batch", ...),
        ``data_residency`` ("us", "eu", "fedramp"), ``vertex_location``, ``inference_geo``."""
        fields.update(
            api_key_id=api_key_id,
            request_id=request_id,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            status=status,
        )
        return _validated(UsageRecorded, self._envelope(occurred_at, **fields))

    def create_key(
        self,
        *,
        name: str,
        key_hash: str | None = None,
        plaintext_key: str | None = None,
        api_key_id: UUID | str | None = None,
        owner: str | None = None,
        allowed_models: list[str] | None = None,
        max_budget_usd: Decimal | str | None = None,
        expires_at: datetime | None = None,
        enabled: bool = True,
        metadata: dict[str, str] | None = None,
        occurred_at: datetime | None = None,
    ) -> ApiKeyCreated:
        """An ApiKeyCreated from ``key_hash`` or, hashed here, ``plaintext_key`` (never sent)."""
        if (key_hash is None) == (plaintext_key is None):
            raise ValueError("give exactly one of key_hash or plaintext_key")
        return _validated(
            ApiKeyCreated,
            self._envelope(
                occurred_at,
                api_key_id=api_key_id if api_key_id is not None else uuid4(),
                key_hash=key_hash if key_hash is not None else hash_key(plaintext_key or ""),
                name=name,
                owner=owner,
                allowed_models=allowed_models or [],
                max_budget_usd=max_budget_usd,
                expires_at=expires_at,
                enabled=enabled,
                metadata=metadata or {},
            ),
        )

    def update_key(
        self,
        *,
        api_key_id: UUID | str,
        name: str | _Unset = UNSET,
        owner: str | _Unset | None = UNSET,
        allowed_models: list[str] | _Unset = UNSET,
        max_budget_usd: Decimal | str | _Unset | None = UNSET,
        expires_at: datetime | _Unset | None = UNSET,
        enabled: bool | _Unset = UNSET,
        occurred_at: datetime | None = None,
    ) -> ApiKeyUpdated:
        """An ApiKeyUpdated carrying only the arguments given; None clears a nullable field."""
        given = {
            "name": name,
            "owner": owner,
            "allowed_models": allowed_models,
            "max_budget_usd": max_budget_usd,
            "expires_at": expires_at,
            "enabled": enabled,
        }
        changes = {field: value for field, value in given.items() if value is not UNSET}
        if not changes:
            raise ValueError("update_key needs at least one field to change")
        return _validated(
            ApiKeyUpdated, self._envelope(occurred_at, api_key_id=api_key_id, **changes)
        )

    def revoke_key(
        self,
        *,
        api_key_id: UUID | str,
        reason: str | None = None,
        occurred_at: datetime | None = None,
    ) -> ApiKeyRevoked:
        return _validated(
            ApiKeyRevoked, self._envelope(occurred_at, api_key_id=api_key_id, reason=reason)
        )

    def set_key_metadata(
        self,
        *,
        api_key_id: UUID | str,
        key: str,
        value: str,
        occurred_at: datetime | None = None,
    ) -> KeyMetadataSet:
        return _validated(
            KeyMetadataSet,
            self._envelope(occurred_at, api_key_id=api_key_id, key=key, value=value),
        )

    def delete_key_metadata(
        self, *, api_key_id: UUID | str, key: str, occurred_at: datetime | None = None
    ) -> KeyMetadataDeleted:
        return _validated(
            KeyMetadataDeleted, self._envelope(occurred_at, api_key_id=api_key_id, key=key)
        )

    def set_budget(
        self,
        *,
        scope: str,
        limit_usd: Decimal | str | int,
        period: str,
        timezone: str = "UTC",
        alert_thresholds: list[int] | tuple[int, ...] = budgets.DEFAULT_THRESHOLDS,
        occurred_at: datetime | None = None,
    ) -> BudgetSet:
        """A BudgetSet; ``ledger.exceptions.BudgetInputError`` names the field of bad input (a limit
        not above 0, an unknown period or time zone, a malformed scope)."""
        return _validated(BudgetSet, self._envelope(
            occurred_at, scope=budgets.canonical_scope(scope),
            limit_usd=budgets.check_limit(limit_usd), period=budgets.check_period(period),
            timezone=budgets.zone(timezone).key,
            alert_thresholds=budgets.check_thresholds(alert_thresholds)))

    def remove_budget(self, *, scope: str, occurred_at: datetime | None = None) -> BudgetRemoved:
        return _validated(BudgetRemoved, self._envelope(
            occurred_at, scope=budgets.canonical_scope(scope)))


_DEFAULT = EventBuilder("gateway")

# Module-level shortcuts with source="gateway"; use EventBuilder(source) for another source.
usage = _DEFAULT.usage
create_key = _DEFAULT.create_key
update_key = _DEFAULT.update_key
revoke_key = _DEFAULT.revoke_key
set_key_metadata = _DEFAULT.set_key_metadata
delete_key_metadata = _DEFAULT.delete_key_metadata
