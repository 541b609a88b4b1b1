"""The ledger's event contract: pydantic models, the wire format and its routing.

Wire format (see docs/events.md): one event per Kafka message, compact UTF-8 JSON; the
message key is the partition key (``partition_key``) and the headers carry ``type`` and
``schema_version``. Decimals travel as JSON strings so no language rounds money through a
binary float; numbers are accepted on input.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, TypeAlias
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from ledger.fields import (
    BudgetScope,
    Count,
    DataResidency,
    Flag,
    FreeJson,
    FreeJsonOrNull,
    KeyHash,
    Metadata,
    MetadataKey,
    MetadataValue,
    Moment,
    Money,
    Names,
    NonEmptyStr,
    Percent,
    Seconds,
    ServiceTier,
    Uuid,
)

ENVELOPE_FIELDS = frozenset({"event_id", "type", "schema_version", "occurred_at", "source"})


class EventBase(BaseModel):
    """Envelope shared by every event; ``event_id`` is the projector's idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Which topic family the event belongs to; not a field, so it never reaches the wire.
    topic_family: ClassVar[Literal["usage", "keys", "catalog", "alerts"]]

    event_id: Uuid
    type: str
    schema_version: int
    occurred_at: Moment
    source: NonEmptyStr

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: object) -> object:
        # Literal[1] alone would take true (True == 1 in Python); JSON Schema's const does not.
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    def partition_key(self) -> str:
        raise NotImplementedError


class _KeyScoped(EventBase):
    """Events ordered per API key: keyed by api_key_id so one key's history stays in order."""

    api_key_id: Uuid

    def partition_key(self) -> str:
        key = self.api_key_id
        text = _KEY_TEXT.get(key)
        if text is None:
            if len(_KEY_TEXT) >= _KEY_TEXT_MAX:
                _KEY_TEXT.clear()
            text = _KEY_TEXT[key] = str(key)
        return text


# A key's id as text, per id: producers key one message per call by it, a gateway has few
# keys and many calls, and str(UUID) (Python code) costs several times this lookup.
_KEY_TEXT: dict[UUID, str] = {}
_KEY_TEXT_MAX = 100_000


class UsageRecorded(_KeyScoped):
    """One LLM call through the gateway: what was used, by which key, and optionally its cost.

    Version history: v1 had ``tokens_in``/``tokens_out`` and ``cost`` (USD as a string);
    v2 renamed them to the provider-neutral ``prompt_tokens``/``completion_tokens``/
    ``cost_usd`` and added the cache/audio/reasoning/media counters; v3 added how the
    request was served (``service_tier``, ``data_residency``, ``vertex_location``,
    ``inference_geo``), which the catalog price depends on; v4 added ``output_images``,
    the images the model generated, apart from ``images`` (input images), since the two
    are priced differently. See ledger.upcasting.
    """

    topic_family = "usage"

    type: Literal["usage.recorded"] = "usage.recorded"
    schema_version: Literal[4] = 4
    request_id: NonEmptyStr
    model: NonEmptyStr
    requested_model: NonEmptyStr | None = None
    provider: NonEmptyStr | None = None
    prompt_tokens: Count
    completion_tokens: Count
    cache_read_input_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    reasoning_tokens: Count = 0
    audio_input_tokens: Count = 0
    audio_output_tokens: Count = 0
    images: Count = 0  # input images (sent to the model), priced per input image
    output_images: Count = 0  # images the model generated, priced per output image
    input_seconds: Seconds = Decimal(0)
    output_seconds: Seconds = Decimal(0)
    characters: Count = 0
    # How the request was served; None: standard tier, no regional uplift (docs/pricing.md).
    service_tier: ServiceTier | None = None
    data_residency: DataResidency | None = None
    vertex_location: NonEmptyStr | None = None
    inference_geo: NonEmptyStr | None = None
    latency_ms: Count | None = None
    status: Literal["success", "error"]
    error_code: NonEmptyStr | None = None
    # None means "price it from the catalog at occurred_at" (the projector does that).
    cost_usd: Money | None = None
    metadata: Metadata = Field(default_factory=dict)
    # The reservation ``authorize(..., estimate_usd=)`` handed out for this call; projecting
    # the event settles it (docs/budgets.md). Not part of what the event says about usage:
    # the fingerprint leaves it out.
    hold_id: NonEmptyStr | None = None


class ApiKeyCreated(_KeyScoped):
    """A key came into existence. Only its SHA-256 hash is carried, never the plaintext."""

    topic_family = "keys"

    type: Literal["api_key.created"] = "api_key.created"
    schema_version: Literal[1] = 1
    key_hash: KeyHash
    name: NonEmptyStr
    owner: NonEmptyStr | None = None
    allowed_models: Names = Field(default_factory=list)  # empty = every model
    max_budget_usd: Money | None = None
    expires_at: Moment | None = None
    enabled: Flag = True
    metadata: Metadata = Field(default_factory=dict)


_NOT_NULLABLE_UPDATES = ("name", "allowed_models", "enabled")


class ApiKeyUpdated(_KeyScoped):
    """A partial change: only the fields present in the message change.

    A field that is absent is left as it is; an explicit ``null`` clears a nullable field
    (``owner``, ``max_budget_usd``, ``expires_at``). This is pydantic's ``model_fields_set``
    and ``dump_event`` writes only the fields that were set, so absence survives the wire.
    """

    topic_family = "keys"

    type: Literal["api_key.updated"] = "api_key.updated"
    schema_version: Literal[1] = 1
    # SkipJsonSchema: None is only the Python default ("absent"); null is refused below.
    name: NonEmptyStr | SkipJsonSchema[None] = None
    owner: NonEmptyStr | None = None
    allowed_models: list[NonEmptyStr] | SkipJsonSchema[None] = None
    max_budget_usd: Money | None = None
    expires_at: Moment | None = None
    enabled: Flag | SkipJsonSchema[None] = None

    @field_validator(*_NOT_NULLABLE_UPDATES, mode="before")
    @classmethod
    def _reject_null(cls, value: object) -> object:
        # Only explicit input reaches this validator (defaults are not validated), so an
        # omitted field stays "unchanged" while an explicit null is refused.
        if value is None:
            raise ValueError("cannot be null; omit the field to leave it unchanged")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields this update sets (explicit nulls included), envelope excluded."""
        changed = self.model_fields_set - ENVELOPE_FIELDS - {"api_key_id"}
        return {name: getattr(self, name) for name in sorted(changed)}


class ApiKeyRevoked(_KeyScoped):
    """Final: a revoked key never becomes usable again."""

    topic_family = "keys"

    type: Literal["api_key.revoked"] = "api_key.revoked"
    schema_version: Literal[1] = 1
    reason: NonEmptyStr | None = None


class KeyMetadataSet(_KeyScoped):
    topic_family = "keys"

    type: Literal["key_metadata.set"] = "key_metadata.set"
    schema_version: Literal[1] = 1
    key: MetadataKey
    value: MetadataValue


class KeyMetadataDeleted(_KeyScoped):
    topic_family = "keys"

    type: Literal["key_metadata.deleted"] = "key_metadata.deleted"
    schema_version: Literal[1] = 1
    key: MetadataKey


BudgetPeriod = Literal["day", "week", "month", "total"]


class _BudgetScoped(EventBase):
    """Budget events, ordered per scope: keyed by the scope string."""

    scope: BudgetScope

    def partition_key(self) -> str:
        return self.scope


class BudgetSet(_BudgetScoped):
    """A spending ceiling for a key (``key:<api_key_id>``) or an owner (``owner:<name>``).

    Replaces the scope's previous budget. Periods are calendar periods in ``timezone`` (an
    IANA name; a week starts on Monday); ``total`` never resets. Each alert threshold (a
    percent of the limit) is crossed once per period. A zero limit stops all spending.
    """

    topic_family = "keys"

    type: Literal["budget.set"] = "budget.set"
    schema_version: Literal[1] = 1
    limit_usd: Money
    period: BudgetPeriod
    timezone: NonEmptyStr = "UTC"
    alert_thresholds: list[Percent] = Field(default_factory=lambda: [50, 80, 100])


class BudgetRemoved(_BudgetScoped):
    topic_family = "keys"

    type: Literal["budget.removed"] = "budget.removed"
    schema_version: Literal[1] = 1


class BudgetThresholdCrossed(_BudgetScoped):
    """Spend in one period of a budget reached ``threshold`` percent of its limit.

    Written by the ledger (never by gateways), once per scope, period and threshold: the
    event_id is derived from those, so a re-publication is a duplicate with the same id.
    """

    topic_family = "alerts"

    type: Literal["budget.threshold_crossed"] = "budget.threshold_crossed"
    schema_version: Literal[1] = 1
    period: BudgetPeriod
    period_start: Moment
    threshold: Percent
    limit_usd: Money
    spent_usd: Money


class ProviderUpserted(EventBase):
    topic_family = "catalog"

    type: Literal["provider.upserted"] = "provider.upserted"
    schema_version: Literal[1] = 1
    name: NonEmptyStr
    base_url: NonEmptyStr | None = None
    api_version: NonEmptyStr | None = None
    auth_scheme: NonEmptyStr | None = None
    features: Names = Field(default_factory=list)
    config: FreeJsonOrNull = Field(default_factory=dict)

    def partition_key(self) -> str:
        return self.name


class ProviderRemoved(EventBase):
    topic_family = "catalog"

    type: Literal["provider.removed"] = "provider.removed"
    schema_version: Literal[1] = 1
    name: NonEmptyStr

    def partition_key(self) -> str:
        return self.name


class ModelUpserted(EventBase):
    """A model's price-map entry, kept whole in ``raw``; prices apply from ``valid_from``."""

    topic_family = "catalog"

    type: Literal["model.upserted"] = "model.upserted"
    schema_version: Literal[1] = 1
    name: NonEmptyStr
    provider: NonEmptyStr | None = None
    raw: FreeJson
    valid_from: Moment

    def partition_key(self) -> str:
        return self.name


class ModelRetired(EventBase):
    topic_family = "catalog"

    type: Literal["model.retired"] = "model.retired"
    schema_version: Literal[1] = 1
    name: NonEmptyStr

    def partition_key(self) -> str:
        return self.name


class ModelAliasSet(EventBase):
    """Keyed by the alias (not the target) so one alias's set/remove history stays ordered."""

    topic_family = "catalog"

    type: Literal["model_alias.set"] = "model_alias.set"
    schema_version: Literal[1] = 1
    alias: NonEmptyStr
    model: NonEmptyStr

    def partition_key(self) -> str:
        return self.alias


class ModelAliasRemoved(EventBase):
    topic_family = "catalog"

    type: Literal["model_alias.removed"] = "model_alias.removed"
    schema_version: Literal[1] = 1
    alias: NonEmptyStr

    def partition_key(self) -> str:
        return self.alias


Event: TypeAlias = Annotated[
    UsageRecorded
    | ApiKeyCreated
    | ApiKeyUpdated
    | ApiKeyRevoked
    | KeyMetadataSet
    | KeyMetadataDeleted
    | BudgetSet
    | BudgetRemoved
    | BudgetThresholdCrossed
    | ProviderUpserted
    | ProviderRemoved
    | ModelUpserted
    | ModelRetired
    | ModelAliasSet
    | ModelAliasRemoved,
    Field(discriminator="type"),
]

EVENT_CLASSES: tuple[type[EventBase], ...] = (
    UsageRecorded,
    ApiKeyCreated,
    ApiKeyUpdated,
    ApiKeyRevoked,
    KeyMetadataSet,
    KeyMetadataDeleted,
    BudgetSet,
    BudgetRemoved,
    BudgetThresholdCrossed,
    ProviderUpserted,
    ProviderRemoved,
    ModelUpserted,
    ModelRetired,
    ModelAliasSet,
    ModelAliasRemoved,
)


def _default_of(cls: type[EventBase], field: str) -> Any:
    return cls.model_fields[field].default


EVENT_TYPES: dict[str, type[EventBase]] = {_default_of(c, "type"): c for c in EVENT_CLASSES}
CURRENT_VERSIONS: dict[str, int] = {
    name: _default_of(cls, "schema_version") for name, cls in EVENT_TYPES.items()
}

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
