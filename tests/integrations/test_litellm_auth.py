"""The auth hook's answers and the budget-reservation seam, against a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from litellm.proxy._types import ProxyException
from starlette.requests import Request

from integrations.litellm import KEY_ID_FIELD, LedgerAuth, LedgerCallback, estimate_cost
from integrations.litellm.budget import RESERVATION_FIELD
from ledger.settings import Settings
from readmodels import Model
from tests.polling import wait_until
from tests.readmodels.conftest import Writer, make_settings


def _request(body: dict[str, Any]) -> Request:
    payload = json.dumps(body).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions",
                    "headers": [(b"content-type", b"application/json")], "query_string": b"",
                    "path_params": {}}, receive)


class Reservations:
    """Records what the adapter asks of the budget implementation; refuses above a limit."""

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit
        self.reserved: list[tuple[uuid.UUID, str, Decimal]] = []
        self.settled: list[tuple[uuid.UUID, str]] = []

    async def reserve(self, key_id: uuid.UUID, reservation_id: str, estimate_usd: Decimal) -> bool:
        if estimate_usd > self.limit:
            return False
        self.reserved.append((key_id, reservation_id, estimate_usd))
        return True

    async def settle(self, key_id: uuid.UUID, reservation_id: str) -> None:
        self.settled.append((key_id, reservation_id))


@pytest.fixture
async def auth(pg_dsn: str) -> AsyncIterator[LedgerAuth]:
    hook = LedgerAuth(make_settings(pg_dsn))
    yield hook
    await hook.close()


async def _refused(hook: LedgerAuth, key: str, model: str) -> ProxyException:
    with pytest.raises(ProxyException) as refused:
        await hook(_request({"model": model, "messages": []}), key)
    return refused.value


async def test_each_refusal_has_its_status(auth: LedgerAuth, writer: Writer) -> None:
    good, key_id, key_hash = await writer.add_key(allowed_models=["gpt-4o"], name="ok")
    revoked, _, _ = await writer.add_key(revoked_at=datetime.now(UTC))
    disabled, _, _ = await writer.add_key(enabled=False)
    expired, _, _ = await writer.add_key(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    granted = await auth(_request({"model": "gpt-4o", "messages": []}), good)
    assert granted.metadata == {KEY_ID_FIELD: str(key_id)}
    assert granted.token == key_hash and good not in granted.model_dump_json()
    assert granted.key_alias == "ok"
    for key, reason in ((revoked, "revoked"), (disabled, "disabled"), (expired, "expired"),
                        ("sk-unknown", "unknown_key")):
        refused = await _refused(auth, key, "gpt-4o")
        assert (refused.code, refused.openai_code) == ("401", reason)
    refused = await _refused(auth, good, "gpt-4o-mini")
    assert (refused.code, refused.openai_code) == ("403", "model_not_allowed")
    spender, spender_id, _ = await writer.add_key(max_budget_usd=Decimal("1"))
    await writer.add_spend(spender_id, "gpt-4o", datetime.now(UTC).date().replace(day=1),
                           Decimal("1.5"))
    refused = await _refused(auth, spender, "gpt-4o")
    assert (refused.code, refused.openai_code) == ("403", "over_budget")
    # The answer is built once per key version: a renamed key is answered with its new name.
    again = await auth(_request({"model": "gpt-4o"}), good)
    assert again is not granted and again.key_alias == "ok"
    await writer.update_key(key_id, name="renamed")

    async def renamed() -> bool:
        return (await auth(_request({"model": "gpt-4o"}), good)).key_alias == "renamed"

    await wait_until(renamed, 5.0, "the renamed key answered", interval=0.005)


def test_the_estimate_is_exact() -> None:
    now = datetime.now(UTC)
    model = Model(name="gpt-4o", provider="openai", mode="chat",
                  input_cost_per_token=Decimal("0.0000025"),
                  output_cost_per_token=Decimal("0.00001"),
                  prices={"input_cost_per_token": Decimal("0.0000025"),
                          "output_cost_per_token": Decimal("0.00001")},
                  max_input_tokens=None, max_output_tokens=None, max_tokens=None,
                  capabilities=frozenset(), features=(), deprecation_date=None, valid_from=now,
                  retired_at=None, updated_at=now)
    assert estimate_cost(model, 333) == Decimal("0.00333")
    assert estimate_cost(model, 333, prompt_tokens=7) == Decimal("0.0033475")


async def test_a_reservation_is_made_by_the_hook_and_settled_by_the_callback(
    pg_dsn: str, writer: Writer, settings: Settings
) -> None:
    plaintext, key_id, _ = await writer.add_key()
    await writer.add_model("gpt-4o", "openai", input_cost="0.00001")
    reservations = Reservations(limit=Decimal("0.5"))
    hook = LedgerAuth(make_settings(pg_dsn), reservations=reservations)
    try:
        granted = await hook(_request({"model": "gpt-4o", "max_tokens": 1000}), plaintext)
        refused = await _refused_with(hook, {"model": "gpt-4o", "max_tokens": 10**6}, plaintext)
    finally:
        await hook.close()
    [(reserved_key, reservation, estimate)] = reservations.reserved
    assert (reserved_key, estimate) == (key_id, Decimal("0.01"))  # 1000 x 0.00001, exactly
    assert granted.metadata[RESERVATION_FIELD] == reservation
    assert (refused.code, refused.openai_code) == ("403", "over_budget")

    callback = LedgerCallback(settings, reservations=reservations)
    kwargs = {"litellm_call_id": "call-1", "standard_logging_object": {
        "litellm_call_id": "call-1", "status": "success", "model": "gpt-4o",
        "prompt_tokens": 3, "completion_tokens": 5,
        "metadata": {"user_api_key_auth_metadata": dict(granted.metadata)}}}
    try:
        await callback.record(kwargs, None)
    finally:
        await callback.close()
    assert callback.errors == 0 and reservations.settled == [(key_id, reservation)]


async def _refused_with(hook: LedgerAuth, body: dict[str, Any], key: str) -> ProxyException:
    with pytest.raises(ProxyException) as refused:
        await hook(_request(body), key)
    return refused.value
