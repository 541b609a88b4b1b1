"""Keys: every authorization reason, negative caching, single-flight, listing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.keys import generate_key, hash_key
from readmodels import ApiKey, InvalidArgumentError, ReadModels, Reason
from readmodels.usage import month_start
from tests.polling import wait_until
from tests.readmodels.conftest import Writer


async def test_ok_and_unknown(rm: ReadModels, writer: Writer) -> None:
    plaintext, key_id, _ = await writer.add_key(metadata={"team": "search"})
    decision = await rm.keys.authorize(plaintext, "gpt-4o")
    assert decision.allowed and decision.reason is Reason.OK
    assert decision.key is not None and decision.key.id == key_id
    assert decision.key.metadata == {"team": "search"}
    unknown = await rm.keys.authorize(generate_key(), "gpt-4o")
    assert (unknown.allowed, unknown.reason, unknown.key) == (False, Reason.UNKNOWN_KEY, None)
    assert (await rm.keys.authorize("", "gpt-4o")).reason is Reason.UNKNOWN_KEY


async def test_revoked_disabled_expired_in_check_order(rm: ReadModels, writer: Writer) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    both, _, _ = await writer.add_key(revoked_at=past, enabled=False, expires_at=past)
    disabled, _, _ = await writer.add_key(enabled=False, expires_at=past)
    expired, _, _ = await writer.add_key(expires_at=past, allowed_models=["other"])
    assert (await rm.keys.authorize(both, "m")).reason is Reason.REVOKED
    assert (await rm.keys.authorize(disabled, "m")).reason is Reason.DISABLED
    assert (await rm.keys.authorize(expired, "m")).reason is Reason.EXPIRED


async def test_expiry_is_checked_at_decision_time(rm: ReadModels, writer: Writer) -> None:
    plaintext, _, _ = await writer.add_key(
        expires_at=datetime.now(UTC) + timedelta(milliseconds=300))
    await writer.settled(rm)
    assert (await rm.keys.authorize(plaintext, "m")).allowed
    queries = rm.keys.queries
    await asyncio.sleep(0.35)
    decision = await rm.keys.authorize(plaintext, "m")
    assert decision.reason is Reason.EXPIRED
    assert rm.keys.queries == queries  # served from the cache, yet expired


async def test_model_allow_list_resolves_aliases_and_prefixes(
    rm: ReadModels, writer: Writer
) -> None:
    await writer.add_model("gpt-4o", "openai")
    await writer.add_model("claude-3", "anthropic")
    await writer.set_alias("4o", "gpt-4o")
    by_name, _, _ = await writer.add_key(allowed_models=["gpt-4o"])
    by_alias, _, _ = await writer.add_key(allowed_models=["4o"])
    by_prefix, _, _ = await writer.add_key(allowed_models=["openai/gpt-4o"])
    for plaintext in (by_name, by_alias, by_prefix):
        for requested in ("gpt-4o", "4o", "openai/gpt-4o", "openai/4o"):
            decision = await rm.keys.authorize(plaintext, requested)
            assert decision.allowed, (plaintext, requested)
        refused = await rm.keys.authorize(plaintext, "claude-3")
        assert refused.reason is Reason.MODEL_NOT_ALLOWED
        assert (await rm.keys.authorize(plaintext, "anthropic/gpt-4o")).reason is (
            Reason.MODEL_NOT_ALLOWED)
        assert (await rm.keys.authorize(plaintext, "no-such-model")).reason is (
            Reason.MODEL_NOT_ALLOWED)
    unknown_entry, _, _ = await writer.add_key(allowed_models=["internal-model"])
    assert (await rm.keys.authorize(unknown_entry, "internal-model")).allowed


async def test_over_budget_uses_month_to_date_summaries(rm: ReadModels, writer: Writer) -> None:
    await writer.add_model("gpt-4o", "openai")
    plaintext, key_id, _ = await writer.add_key(max_budget_usd=Decimal("1.00"),
                                                allowed_models=["gpt-4o"])
    this_month = month_start(datetime.now(UTC))
    last_month = month_start(datetime.combine(this_month, datetime.min.time(), UTC)
                             - timedelta(days=1))
    await writer.add_spend(key_id, "gpt-4o", last_month, Decimal("50"))  # other month: ignored
    await writer.add_spend(key_id, "gpt-4o", this_month, Decimal("0.60"))
    assert (await rm.keys.authorize(plaintext, "gpt-4o")).allowed
    # The model check comes before the budget check.
    assert (await rm.keys.authorize(plaintext, "x")).reason is Reason.MODEL_NOT_ALLOWED
    await writer.add_spend(key_id, "gpt-4o-mini", this_month, Decimal("0.40"))  # exactly 1.00

    async def refused() -> bool:
        return (await rm.keys.authorize(plaintext, "gpt-4o")).reason is Reason.OVER_BUDGET

    await wait_until(refused, 1.0, "refused", interval=0.005)
    assert await rm.usage.month_to_date_spend(key_id) == Decimal("1.00")


async def test_revocation_is_seen_at_once(rm: ReadModels, writer: Writer) -> None:
    plaintext, key_id, _ = await writer.add_key()
    assert (await rm.keys.authorize(plaintext, "m")).allowed
    await writer.revoke(key_id, by="id")  # a notification naming only the id is enough

    async def refused() -> bool:
        return (await rm.keys.authorize(plaintext, "m")).reason is Reason.REVOKED

    await wait_until(refused, 1.0, "refused", interval=0.005)


async def test_negative_cache_then_key_created(rm: ReadModels, writer: Writer) -> None:
    plaintext = generate_key()
    key_hash = hash_key(plaintext)
    for _ in range(50):
        assert await rm.keys.get_by_hash(key_hash) is None
    assert rm.keys.queries == 1  # the flood reached PostgreSQL once
    stats = rm.stats().caches["api_keys"]
    assert stats.negative_hits == 49 and stats.loads == 1
    _, key_id, _ = await writer.add_key(plaintext)

    async def found() -> bool:
        return (await rm.keys.get_by_hash(key_hash)) is not None

    await wait_until(found, 1.0, "found", interval=0.005)
    key = await rm.keys.get(key_id)
    assert key is not None and key.key_hash == key_hash


async def test_single_flight(rm: ReadModels, writer: Writer) -> None:
    _, _, key_hash = await writer.add_key()
    await writer.settled(rm)
    results = await asyncio.gather(*(rm.keys.get_by_hash(key_hash) for _ in range(100)))
    assert rm.keys.queries == 1
    assert all(r is not None and r.key_hash == key_hash for r in results)
    missing = hash_key(generate_key())
    await asyncio.gather(*(rm.keys.get_by_hash(missing) for _ in range(100)))
    assert rm.keys.queries == 2


async def test_load_racing_an_invalidation_does_not_store(
    rm: ReadModels, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plaintext, key_id, key_hash = await writer.add_key()
    await writer.settled(rm)
    gate = asyncio.Event()
    original = rm.keys._load_by_hash

    async def slow_load(h: str) -> ApiKey | None:
        row = await original(h)  # reads the key while still valid
        await gate.wait()
        return row

    monkeypatch.setattr(rm.keys, "_load_by_hash", slow_load)
    pending = asyncio.ensure_future(rm.keys.get_by_hash(key_hash))
    await asyncio.sleep(0.05)
    await writer.revoke(key_id, by="hash")
    await asyncio.sleep(0.1)  # the notification arrives while the load is in flight
    gate.set()
    stale = await pending
    assert stale is not None and stale.revoked_at is None  # the caller got what was read
    monkeypatch.undo()
    assert (await rm.keys.authorize(plaintext, "m")).reason is Reason.REVOKED


async def test_list_keyset_pagination_and_metadata(rm: ReadModels, writer: Writer) -> None:
    ids = set()
    for i in range(7):
        _, key_id, _ = await writer.add_key(owner="acme" if i % 2 == 0 else "other",
                                            metadata={"n": str(i)}, notify=False)
        ids.add(key_id)
    seen: list[ApiKey] = []
    page = await rm.keys.list(owner="acme", limit=2)
    while True:
        seen.extend(page.items)
        if page.next_after is None:
            break
        page = await rm.keys.list(owner="acme", after=page.next_after, limit=2)
    assert [k.id for k in seen] == sorted(k.id for k in seen)
    assert len(seen) == 4 and {k.owner for k in seen} == {"acme"}
    everything = await rm.keys.list(limit=100)
    assert {k.id for k in everything.items} == ids and everything.next_after is None
    first = seen[0]
    assert await rm.keys.metadata(first.id) == dict(first.metadata)
    assert await rm.keys.metadata(uuid.uuid4()) == {}
    assert await rm.keys.get(uuid.uuid4()) is None
    with pytest.raises(InvalidArgumentError):
        await rm.keys.list(limit=0)
