"""API keys: cached lookup by hash, authorization decisions, listing and metadata.

The cache is keyed by the key hash, never by the plaintext: ``authorize`` hashes the presented
key with :func:`ledger.keys.hash_key` and forgets the plaintext. Unknown hashes are cached as
negative entries with their own short TTL, so a flood of bad keys costs one query per distinct
key per TTL, and a notification naming the hash (key created) evicts the negative entry.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID

import asyncpg

from ledger.keys import hash_key, is_key_hash
from readmodels.budgets import BudgetReader, BudgetState, Slot
from readmodels.cache import MISSING, Cache
from readmodels.exceptions import DatabaseUnavailableError, InvalidArgumentError
from readmodels.usage import as_uuid

if TYPE_CHECKING:
    from readmodels.models import ModelReader
    from readmodels.readmodels import Database
    from readmodels.usage import UsageReader

MAX_PAGE = 1000

_COLUMNS = """
    k.id, k.key_hash, k.name, k.owner, k.enabled, k.expires_at, k.allowed_models,
    k.max_budget_usd, k.created_at, k.updated_at, k.revoked_at,
    ARRAY(SELECT m.key FROM key_metadata m WHERE m.api_key_id = k.id ORDER BY m.key)
        AS meta_keys,
    ARRAY(SELECT m.value FROM key_metadata m WHERE m.api_key_id = k.id ORDER BY m.key)
        AS meta_values
"""
_BY_HASH = f"SELECT {_COLUMNS} FROM api_keys k WHERE k.key_hash = $1"
_HASH_BY_ID = "SELECT key_hash FROM api_keys WHERE id = $1"
# Separate statements per filter rather than "$1 IS NULL OR ...": each keeps an index plan.
_LIST_ALL = f"SELECT {_COLUMNS} FROM api_keys k ORDER BY k.id LIMIT $1"
_LIST_ALL_AFTER = f"SELECT {_COLUMNS} FROM api_keys k WHERE k.id > $1 ORDER BY k.id LIMIT $2"
_LIST_OWNER = f"SELECT {_COLUMNS} FROM api_keys k WHERE k.owner = $1 ORDER BY k.id LIMIT $2"
_LIST_OWNER_AFTER = (
    f"SELECT {_COLUMNS} FROM api_keys k WHERE k.owner = $1 AND k.id > $2 ORDER BY k.id LIMIT $3"
)
_METADATA = "SELECT key, value FROM key_metadata WHERE api_key_id = $1 ORDER BY key"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as projected from the key events, with its metadata."""

    id: UUID
    key_hash: str
    name: str
    owner: str | None
    enabled: bool
    expires_at: datetime | None
    allowed_models: frozenset[str]  # empty: every model
    max_budget_usd: Decimal | None
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    metadata: Mapping[str, str]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Reason(enum.StrEnum):
    """Why a key was or was not allowed; values are stable strings for logs and responses."""

    OK = "ok"
    UNKNOWN_KEY = "unknown_key"
    DISABLED = "disabled"
    REVOKED = "revoked"
    EXPIRED = "expired"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    OVER_BUDGET = "over_budget"
    # PostgreSQL could not be reached or did not answer in time: the key was NOT checked.
    # ``allowed`` is then AUTHORIZE_ON_DB_ERROR's choice (deny by default).
    UNAVAILABLE = "unavailable"


class Decision(NamedTuple):
    """``authorize``'s answer. A named tuple rather than a frozen dataclass: one is made on
    every call, and a frozen dataclass's ``__init__`` (each field set through
    ``object.__setattr__``) costs 2.4 us here against 1.0 us; it is as immutable."""

    allowed: bool
    reason: Reason
    key: ApiKey | None
    detail: str | None = None  # for ``unavailable``: what failed (never the key)
    # With ``estimate_usd`` and allowed: the reservation to put on the UsageRecorded (or to
    # give back with ``release``). None otherwise.
    hold_id: str | None = None
    # The binding ceiling (lowest remaining) when any applies; for ``over_budget``, the one
    # that refused.
    budget: BudgetState | None = None

    @property
    def checked(self) -> bool:
        """False when the decision is AUTHORIZE_ON_DB_ERROR's fallback, not a real check."""
        return self.reason is not Reason.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of keys ordered by id; pass ``next_after`` back as ``after`` for the next."""

    items: tuple[ApiKey, ...]
    next_after: UUID | None


def _key_from_row(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"], key_hash=row["key_hash"], name=row["name"], owner=row["owner"],
        enabled=row["enabled"], expires_at=row["expires_at"],
        allowed_models=frozenset(row["allowed_models"]), max_budget_usd=row["max_budget_usd"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
        metadata=MappingProxyType(dict(zip(row["meta_keys"], row["meta_values"], strict=True))),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _check_estimate(estimate_usd: object) -> None:
    if not (isinstance(estimate_usd, Decimal) and estimate_usd.is_finite()
            and estimate_usd >= 0):
        raise InvalidArgumentError(
            f"estimate_usd must be a Decimal of 0 or more, got {estimate_usd!r}")


class KeyReader:
    """Reads of ``api_keys`` and ``key_metadata``; reached as ``ReadModels.keys``."""

    def __init__(
        self,
        db: Database,
        cache: Cache[str, ApiKey],
        models: ModelReader,
        usage: UsageReader,
        budgets: BudgetReader,
        *,
        clock: Callable[[], datetime] = _now,
        allow_when_unavailable: bool = False,
    ) -> None:
        self._db = db
        self._cache = cache
        self._models = models
        self._usage = usage
        self._budgets = budgets
        self._clock = clock
        self._allow_when_unavailable = allow_when_unavailable
        self.unavailable = 0  # authorize() answers that could not be checked
        # Notifications may name a key by id only; this maps ids of cached keys to their hash.
        # Pruned to the cache's live keys when it grows past twice the cache size.
        self._hash_by_id: dict[str, str] = {}
        self.queries = 0  # database round trips for key lookups (tests check single-flight)

    # -- lookups -------------------------------------------------------------------------------

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key whose stored hash is ``key_hash``, or None; served from the cache."""
        found = self._cache.lookup(key_hash)
        if found is not MISSING:
            return found
        return await self._cache.load(key_hash, self._load_by_hash)

    async def get(self, key_id: UUID | str) -> ApiKey | None:
        """The key with this id, or None."""
        ident = str(as_uuid(key_id))
        key_hash = self._hash_by_id.get(ident)
        if key_hash is None:
            self.queries += 1
            key_hash = await self._db.fetchval("look up key id", _HASH_BY_ID, UUID(ident))
            if key_hash is None:
                return None
            self._remember(ident, key_hash)
        return await self.get_by_hash(key_hash)

    async def _load_by_hash(self, key_hash: str) -> ApiKey | None:
        if not is_key_hash(key_hash):
            return None  # cannot exist (CHECK constraint); still cached as a negative entry
        self.queries += 1
        row = await self._db.fetchrow("load key", _BY_HASH, key_hash)
        if row is None:
            return None
        key = _key_from_row(row)
        self._remember(str(key.id), key.key_hash)
        return key

    def _remember(self, key_id: str, key_hash: str) -> None:
        index = self._hash_by_id
        index[key_id] = key_hash
        if len(index) > 2 * self._cache.maxsize + 16:
            live = set(self._cache.keys())
            self._hash_by_id = {i: h for i, h in index.items() if h in live}

    # -- authorization -------------------------------------------------------------------------

    async def authorize(self, plaintext_key: str, model: str,
                        estimate_usd: Decimal | None = None, *,
                        estimate: Callable[[], Awaitable[Decimal | None]] | None = None,
                        ) -> Decision:
        """May ``plaintext_key`` call ``model`` now? Checks run in the order of :class:`Reason`.

        Budgets: every ceiling of the key (its budget, its owner's, ``max_budget_usd`` for
        the UTC month) is checked; the lowest remaining binds and the decision names it.
        With ``estimate_usd`` the decision, if allowed, holds that amount on every ceiling
        (``hold_id``; refused with ``over_budget`` when it does not fit): put the hold id on
        the UsageRecorded, or ``release`` it if the call produced no usage. Without it,
        spent + open holds is compared with each limit: best effort (docs/budgets.md).
        ``estimate`` instead of ``estimate_usd``: a coroutine function giving it, awaited only
        when a ceiling applies to the key (nothing is held otherwise), for a gateway whose
        estimate costs time of its own; its database errors answer ``unavailable`` as below.

        Expiry is compared with the clock at every call, never cached as a boolean. When a
        check needs PostgreSQL and it cannot answer (unreachable, or past DB_ACQUIRE_TIMEOUT +
        DB_COMMAND_TIMEOUT), the answer is ``Reason.UNAVAILABLE``, allowed or not by
        AUTHORIZE_ON_DB_ERROR, with the key when it came from the cache. Never raises for that.
        """
        if estimate is not None and estimate_usd is not None:
            raise InvalidArgumentError("give estimate_usd or estimate, not both")
        if estimate_usd is not None:  # for every key: a caller's bug is not an answer
            _check_estimate(estimate_usd)
        key: ApiKey | None = None
        try:  # one frame, no helper coroutine: this is the cached hot path
            if plaintext_key:
                key = await self.get_by_hash(hash_key(plaintext_key))
            if key is None:
                return Decision(False, Reason.UNKNOWN_KEY, None)
            if key.revoked_at is not None:
                return Decision(False, Reason.REVOKED, key)
            if not key.enabled:
                return Decision(False, Reason.DISABLED, key)
            if key.expires_at is not None and key.expires_at <= self._clock():
                return Decision(False, Reason.EXPIRED, key)
            if key.allowed_models and not await self._model_allowed(key.allowed_models, model):
                return Decision(False, Reason.MODEL_NOT_ALLOWED, key)
            ceilings = await self._budgets.plan(key)
            if not ceilings:
                return Decision(True, Reason.OK, key)
            if estimate is not None:
                estimate_usd = await estimate()
                if estimate_usd is not None:
                    _check_estimate(estimate_usd)
            if estimate_usd is None:
                return await self._check_spent(key, ceilings)
            hold, state = await self._budgets.reserve(ceilings, estimate_usd)
            if hold is None:
                return Decision(False, Reason.OVER_BUDGET, key, budget=state)
            return Decision(True, Reason.OK, key, hold_id=hold, budget=state)
        except DatabaseUnavailableError as exc:
            self.unavailable += 1
            return Decision(self._allow_when_unavailable, Reason.UNAVAILABLE, key, str(exc))

    async def _check_spent(self, key: ApiKey, ceilings: list[Slot]) -> Decision:
        states = await self._budgets.states(ceilings)
        if key.max_budget_usd is not None:
            # The monthly summaries hold the same UTC-month spend, and are what this check
            # read before budgets existed.
            month = await self._usage.month_to_date_spend(key.id)
            states = [s if c.ceiling.origin != "max_budget_usd" else BudgetState(
                s.scope, s.period, s.limit_usd, max(s.spent, month), s.reserved)
                for c, s in zip(ceilings, states, strict=True)]
        binding = min(states, key=lambda s: s.remaining)
        if binding.spent + binding.reserved >= binding.limit_usd:
            return Decision(False, Reason.OVER_BUDGET, key, budget=binding)
        return Decision(True, Reason.OK, key, budget=binding)

    async def release(self, hold_id: str) -> bool:
        """Give back a hold whose call produced no usage; False for an unknown hold id."""
        return await self._budgets.release(hold_id)

    async def _model_allowed(self, allowed: frozenset[str], model: str) -> bool:
        if model in allowed:
            return True
        # Compare canonical names: the request and the allow-list may each use an alias or a
        # provider-prefixed name for the same model.
        requested = await self._models.get_by_name(model)
        names = {model} if requested is None else {model, requested.name}
        if not names.isdisjoint(allowed):
            return True
        for entry in sorted(allowed):
            resolved = await self._models.get_by_name(entry)
            if resolved is not None and resolved.name in names:
                return True
        return False

    # -- listing and metadata ------------------------------------------------------------------

    async def list(
        self, owner: str | None = None, after: UUID | str | None = None, limit: int = 100
    ) -> KeyPage:
        """Keys ordered by id (all keys, or one owner's), ``limit`` per page, keyset-paged."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        start = None if after is None else as_uuid(after)
        # One row more than asked tells whether another page exists without an extra query.
        if owner is None:
            rows = await (
                self._db.fetch("list keys", _LIST_ALL, limit + 1) if start is None
                else self._db.fetch("list keys", _LIST_ALL_AFTER, start, limit + 1)
            )
        else:
            rows = await (
                self._db.fetch("list keys", _LIST_OWNER, owner, limit + 1) if start is None
                else self._db.fetch("list keys", _LIST_OWNER_AFTER, owner, start, limit + 1)
            )
        items = tuple(_key_from_row(row) for row in rows[:limit])
        next_after = items[-1].id if len(rows) > limit else None
        return KeyPage(items, next_after)

    async def metadata(self, key_id: UUID | str) -> dict[str, str]:
        """The key's metadata read from the table (empty for an unknown key)."""
        rows = await self._db.fetch("read key metadata", _METADATA, as_uuid(key_id))
        return {row["key"]: row["value"] for row in rows}

    # -- invalidation --------------------------------------------------------------------------

    def invalidate(self, key_hashes: frozenset[str], key_ids: frozenset[str]) -> None:
        """Evict exactly the named keys; called from the listener's callback."""
        for key_hash in key_hashes:
            self._cache.evict(key_hash)
        unmapped = False
        for key_id in key_ids:
            mapped = self._hash_by_id.get(key_id)
            if mapped is None:
                unmapped = True
            else:
                self._cache.evict(mapped)
        if unmapped:
            # An id we have not mapped is not cached, but a load in flight may be reading it;
            # we cannot tell which, so no running load may store its result.
            self._cache.abandon_flights()

    def clear(self) -> None:
        self._cache.clear()


async def count_projected(
    conn: asyncpg.Connection, key_ids: list[UUID], *, revoked_only: bool = False
) -> int:
    """How many of ``key_ids`` the keys projection holds (only revoked ones, if asked)."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE id = ANY($1::uuid[]) "
        "AND (NOT $2 OR revoked_at IS NOT NULL)", key_ids, revoked_only))
