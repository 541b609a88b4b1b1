"""The auth hook's answers and the budget-reservation seam, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import pytest
from litellm.proxy._types import ProxyException
from prometheus_client import REGISTRY

from integrations.litellm import (
    HOLD_FIELD,
    KEY_ID_FIELD,
    REASON_FIELD,
    LedgerAuth,
    LedgerCallback,
    estimate_cost,
    prompt_token_bound,
)
from ledger.settings import Settings
from ops.devstack.ports import free_port
from readmodels import Model
from tests.integrations.litellm_calls import proxy_request as _request
from tests.polling import wait_until
from tests.readmodels.conftest import Writer, make_settings
from tests.readmodels.test_budgets import outstanding, set_budget


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
    # A long-context tier and cache writes cost more: the bound takes the dearest rate.
    tiered = dataclasses.replace(model, updated_at=now + timedelta(seconds=1), prices={
        **model.prices, "output_cost_per_token_above_200k_tokens": Decimal("0.00002"),
        "cache_creation_input_token_cost": Decimal("0.000003125"),
        "input_cost_per_token_batches": Decimal("0.00000125")})
    assert estimate_cost(tiered, 333, prompt_tokens=7) == Decimal("0.006681875")


async def _hook_for_a_capped_key(pg_dsn: str, writer: Writer) -> tuple[LedgerAuth, str, UUID]:
    """A hook, and a key with a 0.5 USD budget on gpt-4o at 0.00001 USD a token."""
    plaintext, key_id, _ = await writer.add_key()
    await writer.add_model("gpt-4o", "openai", input_cost="0.00001")
    await set_budget(writer, f"key:{key_id}", "0.5")
    return LedgerAuth(make_settings(pg_dsn)), plaintext, key_id


async def test_the_hook_holds_the_estimate_on_the_budget_and_the_event_carries_the_hold(
    pg_dsn: str, writer: Writer, settings: Settings
) -> None:
    """A request with max_tokens holds its exact estimate on every ceiling of the key; one
    that would pass the cap is refused over_budget; the callback puts the hold id on the
    UsageRecorded, whose projection settles it (tests/projections/test_budget_projection.py)."""
    hook, plaintext, key_id = await _hook_for_a_capped_key(pg_dsn, writer)
    body = {"model": "gpt-4o", "max_tokens": 1000}
    try:
        granted = await hook(_request(body), plaintext)
        refused = await _refused_with(hook, {"model": "gpt-4o", "max_tokens": 10**6}, plaintext)
        unheld = await hook(_request({"model": "gpt-4o"}), plaintext)  # no max_tokens
    finally:
        await hook.close()
    hold = granted.metadata[HOLD_FIELD]
    assert isinstance(hold, str) and hold
    assert HOLD_FIELD not in unheld.metadata
    assert (refused.code, refused.openai_code) == ("403", "over_budget")
    # Held in PostgreSQL as part of a lease: at least this call's estimate is outstanding.
    assert await outstanding(writer.conn, f"key:{key_id}") >= Decimal("0.01")

    callback = LedgerCallback(settings)
    kwargs = {"litellm_call_id": "call-1", "standard_logging_object": {
        "litellm_call_id": "call-1", "status": "success", "model": "gpt-4o",
        "prompt_tokens": 3, "completion_tokens": 5,
        "metadata": {"user_api_key_auth_metadata": dict(granted.metadata)}}}
    event = callback.build_event(kwargs, None)
    assert (event.api_key_id, event.hold_id) == (key_id, hold)


def _held(granted: Any) -> Decimal:
    """The estimate a grant holds, read from its hold id (h1_<estimate>_<lease>...)."""
    return Decimal(granted.metadata[HOLD_FIELD].split("_")[1])


async def test_the_prompt_bound_is_the_json_body_as_sent_or_as_written_again(
    pg_dsn: str, writer: Writer
) -> None:
    """A JSON body the proxy read whole bounds its prompt by its bytes as sent (whitespace and
    escapes included); a body this request object does not hold (parsed through another
    one) is written again as compact JSON and measured."""
    from pydantic_core import to_json
    from starlette.requests import Request

    hook, plaintext, _ = await _hook_for_a_capped_key(pg_dsn, writer)  # 0.00001 USD a token
    body = {"model": "gpt-4o", "max_tokens": 10,
            "messages": [{"role": "user", "content": "h\u00e9llo " * 20}]}
    sent = len(json.dumps(body).encode())  # ", " and ": " and \u escapes: longer than compact
    compact = len(to_json(body))
    assert sent > compact
    try:
        read_here = _request(body)
        as_sent = await hook(read_here, plaintext)
        # The same scope (its parsed-body cache included) through a new request object, as
        # when a middleware parsed it: the bytes are not on this one.
        elsewhere = Request(read_here.scope, read_here.receive)
        written_again = await hook(elsewhere, plaintext)
    finally:
        await hook.close()
    per_token = Decimal("0.00001")
    assert _held(as_sent) == per_token * (sent + 10)
    assert _held(written_again) == per_token * (compact + 10)


async def test_a_form_body_is_not_bounded_by_its_bytes() -> None:
    """A multipart form (an audio file for a transcription) is streamed, not kept: its bytes,
    the file's, are not the prompt's bound; a JSON body's are, as LiteLLM read them."""
    from litellm.proxy.common_utils.http_parsing_utils import _read_request_body
    from starlette.requests import Request

    from integrations.litellm.auth import body_bytes_read

    payload = (b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
               b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
               b"Content-Type: audio/mpeg\r\n\r\n" + b"\x00" * 5000 + b"\r\n--XyZ--\r\n")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    form = Request({"type": "http", "method": "POST", "path": "/v1/audio/transcriptions",
                    "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ"),
                                (b"content-length", str(len(payload)).encode())],
                    "query_string": b"", "path_params": {}}, receive)
    assert (await _read_request_body(request=form))["model"] == "whisper-1"
    assert body_bytes_read(form) is None
    # Read whole by something else first: the bytes are kept, but they are not JSON.
    read_whole = Request(dict(form.scope), receive)
    assert len(await read_whole.body()) == len(payload)
    assert body_bytes_read(read_whole) is None
    chat = _request({"model": "gpt-4o", "max_tokens": 3})
    assert body_bytes_read(chat) is None  # not read yet
    await _read_request_body(request=chat)
    assert body_bytes_read(chat) == len(json.dumps({"model": "gpt-4o", "max_tokens": 3}))


async def test_a_request_for_several_choices_holds_max_tokens_for_each(
    pg_dsn: str, writer: Writer
) -> None:
    """``n`` choices (``best_of`` completions) may each write ``max_tokens``: the hold covers
    all of them, or four answers of 20,000 tokens could spend 0.8 USD of a 0.5 USD budget."""
    hook, plaintext, _ = await _hook_for_a_capped_key(pg_dsn, writer)
    one = {"model": "gpt-4o", "max_tokens": 20_000}
    try:
        assert HOLD_FIELD in (await hook(_request({**one, "n": 1}), plaintext)).metadata
        for several in ({"n": 4}, {"best_of": 4}):
            refused = await _refused_with(hook, {**one, **several}, plaintext)
            assert (refused.code, refused.openai_code) == ("403", "over_budget"), several
        # The Responses API names its bound max_output_tokens: held (and refused) the same.
        refused = await _refused_with(hook, {"model": "gpt-4o", "max_output_tokens": 80_000},
                                      plaintext)
        assert (refused.code, refused.openai_code) == ("403", "over_budget")
    finally:
        await hook.close()


async def test_no_estimate_is_made_for_a_key_without_a_ceiling(
    pg_dsn: str, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate only serves to hold on a budget: a key with no budget, no owner's and no
    max_budget_usd pays neither the model lookup nor the prompt bound."""
    import integrations.litellm.auth as auth_module

    bounded: list[int] = []

    def estimate_request(model: Model, max_tokens: int, body: Any,
                         sent_bytes: int | None) -> Decimal | None:
        bounded.append(max_tokens)
        return Decimal("0.01")

    monkeypatch.setattr(auth_module, "estimate_request", estimate_request)
    free, _, _ = await writer.add_key()
    capped, capped_id, _ = await writer.add_key()
    await writer.add_model("gpt-4o", "openai")
    await set_budget(writer, f"key:{capped_id}", "1")
    hook = LedgerAuth(make_settings(pg_dsn))
    body = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    try:
        granted = await hook(_request(body), free)
        assert bounded == [] and HOLD_FIELD not in granted.metadata
        assert (await hook.readmodels()).models.queries == 0  # nor the catalog asked
        held = await hook(_request(body), capped)
    finally:
        await hook.close()
    assert bounded == [100] and held.metadata[HOLD_FIELD]


def test_the_prompt_bound_is_never_below_litellms_token_count() -> None:
    """The hold must cover the prompt: its bound (bytes of the JSON) is at least the tokens
    LiteLLM counts for the same messages, in English, accented and CJK text."""
    import litellm

    for text in ("hello world " * 50, "héllo wörld " * 50, "日本語のテキスト" * 40, "a"):
        messages = [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": text}]
        counted = litellm.token_counter(model="gpt-4o", messages=messages)
        assert prompt_token_bound({"messages": messages}) >= counted
    assert prompt_token_bound({"input": ["one", "two"]}) >= 2
    assert prompt_token_bound({}) == 0


def test_the_prompt_bound_covers_tools_and_every_other_part_of_the_prompt() -> None:
    """Tool definitions are prompt tokens too (LiteLLM counts them, providers bill them): a
    bound over the messages alone let a call with a large tool list cost more than its hold."""
    import litellm

    tools = [{"type": "function", "function": {
        "name": f"lookup_{n}", "description": "Look up the weather in a city, with the "
        "temperature, humidity, wind and a forecast for the next days. " * 8,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}} for n in range(3)]
    messages = [{"role": "user", "content": "hi"}]
    counted = litellm.token_counter(model="gpt-4o", messages=messages, tools=tools)
    assert counted > 500  # the tools are most of this prompt
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": messages, "tools": tools}
    assert prompt_token_bound(body) >= counted


async def _refused_with(hook: LedgerAuth, body: dict[str, Any], key: str) -> ProxyException:
    with pytest.raises(ProxyException) as refused:
        await hook(_request(body), key)
    return refused.value


class _Forwarder:
    """A TCP port that forwards to PostgreSQL once started: nothing listens before."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for stream in self._writers:  # wait_closed waits for every connection
                stream.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += (writer, up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _forwarder_to(pg_dsn: str) -> tuple[_Forwarder, str]:
    """A forwarder to ``pg_dsn``'s server (not started) and the DSN that goes through it."""
    target = urlsplit(pg_dsn)
    assert target.hostname and target.port
    forwarder = _Forwarder(target.hostname, target.port)
    return forwarder, urlunsplit(target._replace(netloc=target.netloc.replace(
        f"{target.hostname}:{target.port}", f"127.0.0.1:{forwarder.port}")))


def _unavailable_count() -> float:
    counted = REGISTRY.get_sample_value("ledger_litellm_auth_decisions_total",
                                        {"reason": "unavailable"})
    assert counted is not None
    return counted


async def test_postgres_away_at_start_answers_unavailable_and_the_next_request_retries(
    pg_dsn: str, writer: Writer
) -> None:
    """The first request opens the read models: PostgreSQL away then answers as authorize
    does when it cannot reach PostgreSQL (a 401 ``unavailable``, or a pass with
    AUTHORIZE_ON_DB_ERROR=allow), counted, and a later request opens them once it is back."""
    plaintext, key_id, key_hash = await writer.add_key()
    forwarder, away = _forwarder_to(pg_dsn)
    deny = LedgerAuth(make_settings(away))
    allow = LedgerAuth(make_settings(away, authorize_on_db_error="allow"))
    try:
        before = _unavailable_count()
        refused = await _refused(deny, plaintext, "gpt-4o")
        assert (refused.code, refused.openai_code) == ("401", "unavailable")
        assert refused.to_dict()["provider_specific_fields"] == {REASON_FIELD: "unavailable"}
        let_through = await allow(_request({"model": "gpt-4o"}), plaintext)
        # Unchecked: the key's hash, never the plaintext, and no ledger key id.
        assert let_through.token == key_hash and not let_through.metadata
        assert plaintext not in let_through.model_dump_json()
        assert _unavailable_count() == before + 2
        # Concurrent requests share one attempt and all get its answer.
        refusals = await asyncio.gather(*(_refused(deny, plaintext, "m") for _ in range(3)))
        assert {r.openai_code for r in refusals} == {"unavailable"}
        assert _unavailable_count() == before + 5

        await forwarder.start()  # PostgreSQL is back
        granted = await deny(_request({"model": "gpt-4o"}), plaintext)
        assert granted.metadata == {KEY_ID_FIELD: str(key_id)}
        granted = await allow(_request({"model": "gpt-4o"}), plaintext)
        assert granted.metadata == {KEY_ID_FIELD: str(key_id)}
        assert _unavailable_count() == before + 5
    finally:
        await deny.close()
        await allow.close()
        await forwarder.close()


async def test_a_key_let_through_while_postgres_is_away_is_recorded_under_its_own_id(
    pg_dsn: str, writer: Writer
) -> None:
    """With AUTHORIZE_ON_DB_ERROR=allow a call is let through unchecked while PostgreSQL is
    away; a key this process has granted before is still recorded under its ledger key id
    (its hash names it for good), so its spend counts for that key. A key never seen here has
    no id to give."""
    seen, seen_id, _ = await writer.add_key()
    unseen, _, unseen_hash = await writer.add_key()
    forwarder, via = _forwarder_to(pg_dsn)
    await forwarder.start()
    hook = LedgerAuth(make_settings(via, authorize_on_db_error="allow"))
    try:
        assert (await hook(_request({"model": "gpt-4o"}), seen)).metadata == {
            KEY_ID_FIELD: str(seen_id)}
        await forwarder.close()  # PostgreSQL goes away: the listener loses its connection
        before = _unavailable_count()

        async def unchecked() -> bool:
            await hook(_request({"model": "gpt-4o"}), seen)
            return _unavailable_count() > before

        await wait_until(unchecked, 15.0, "the hook answered unavailable", interval=0.05)
        let_through = await hook(_request({"model": "gpt-4o"}), seen)
        assert let_through.metadata == {KEY_ID_FIELD: str(seen_id)}
        never_seen = await hook(_request({"model": "gpt-4o"}), unseen)
        assert never_seen.token == unseen_hash and not never_seen.metadata
    finally:
        await hook.close()
        await forwarder.close()
    kwargs = {"litellm_call_id": "call-away", "standard_logging_object": {
        "litellm_call_id": "call-away", "status": "success", "model": "gpt-4o",
        "metadata": {"user_api_key_auth_metadata": dict(let_through.metadata)}}}
    event = LedgerCallback(make_settings(pg_dsn)).build_event(kwargs, None)
    assert event.api_key_id == seen_id


def test_the_per_request_copy_is_what_model_copy_makes() -> None:
    """The hook copies a key's UserAPIKeyAuth per request by hand (a third of model_copy's
    time): the same fields, fields set and private attributes, and nothing shared to write
    into, from one request's copy to the next either."""
    from litellm.proxy._types import UserAPIKeyAuth

    from integrations.litellm.auth import RequestCopies

    grant = UserAPIKeyAuth(api_key="a" * 64, key_alias="ok", user_id="team-a",
                           metadata={KEY_ID_FIELD: "k"})
    metadata = {KEY_ID_FIELD: "k", HOLD_FIELD: "h1_0.5_ab"}
    copies = RequestCopies(grant)
    ours = copies.copy(metadata)
    theirs = grant.model_copy(update={"metadata": metadata})
    assert type(ours) is type(theirs) and ours == theirs
    assert ours.__dict__ == theirs.__dict__ and ours.metadata is metadata
    assert ours.model_fields_set == theirs.model_fields_set
    assert ours.__pydantic_private__ == theirs.__pydantic_private__
    assert ours.__pydantic_extra__ == theirs.__pydantic_extra__
    ours.request_route = "/chat/completions"  # LiteLLM writes request-scoped fields
    ours.__pydantic_private__["_managed_delegation_verified"] = True
    assert grant.request_route is None and grant.metadata == {KEY_ID_FIELD: "k"}
    assert grant.__pydantic_private__ != ours.__pydantic_private__
    assert ours.model_dump() == theirs.model_dump() | {"request_route": "/chat/completions"}
    # The next request's copy starts from the grant, not from what LiteLLM wrote into this one.
    following = copies.copy({KEY_ID_FIELD: "k"})
    assert following.request_route is None and "request_route" not in following.model_fields_set
    assert following.__pydantic_private__ == theirs.__pydantic_private__


async def test_the_hook_reads_the_body_litellm_parsed() -> None:
    """The body custom_auth sees is the one LiteLLM's reader returns: read from the proxy's
    parsed-body cache when it is there, as the client sent it, and parsed by LiteLLM's
    reader when it is not."""
    from litellm.proxy.common_utils.http_parsing_utils import _read_request_body

    from integrations.litellm.auth import _request_body

    body = {"model": "gpt-4o", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}
    request = _request(body)
    assert "parsed_body" not in request.scope
    assert await _request_body(request) == body  # parsed now, and cached by LiteLLM
    cached = request.scope["parsed_body"][1]
    assert await _request_body(request) is cached  # read there, not copied
    # A key put into the cached dict after parsing was not sent by the client: not read.
    cached["user_api_key_metadata"] = {"added": "later"}
    assert await _request_body(request) == await _read_request_body(request=request) == body
    # A cache of another shape (a later LiteLLM's) is left to LiteLLM's reader.
    request.scope["parsed_body"] = {"model": "other"}
    assert await _request_body(request) == await _read_request_body(request=request)



def test_decisions_are_exported_in_prometheus_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (LiteLLM's proxy run with several workers), /metrics is
    built from the shared files prometheus_client's own metrics write: the decisions must be
    there, and not only in a collector of the process that counted them."""
    script = (
        "from integrations.litellm.metrics import count_decision\n"
        "count_decision('revoked'); count_decision('revoked'); count_decision('ok')\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    exported = generate_latest(registry).decode()
    assert 'ledger_litellm_auth_decisions_total{reason="revoked"} 2.0' in exported
    assert 'ledger_litellm_auth_decisions_total{reason="ok"} 1.0' in exported
