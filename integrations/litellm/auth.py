"""The LiteLLM proxy ``custom_auth`` hook, backed by ``ReadModels.keys.authorize``.

In the proxy's ``config.yaml``::

    general_settings:
      master_key: os.environ/LITELLM_MASTER_KEY   # the proxy refuses to start without one
      custom_auth: integrations.litellm.user_api_key_auth

Keys made by ``ledger keys create`` work in the proxy. Each process keeps its own
``ReadModels`` (opened on the first request, from ``LEDGER_DATABASE_URL``), whose cache
is invalidated by PostgreSQL notifications: a revoked, disabled or expired key, a model
outside the key's list and a key over budget are refused by every process as soon as the
projector has written the change (milliseconds; see docs/litellm.md for the measure).

A refusal is a ``ProxyException`` with an HTTP status (a plain exception would be a 500):
401 for the key itself (unknown, revoked, disabled, expired, or not checkable because
PostgreSQL is away and ``AUTHORIZE_ON_DB_ERROR=deny``, including when the ``ReadModels``
cannot be opened: the next request tries again), 403 for a model outside the key's
list or a key over its budget. The proxy's master key is let through as the proxy admin,
so LiteLLM's admin routes keep working. The plaintext key is never stored or logged: the
``UserAPIKeyAuth`` carries the key's hash, and the ledger's key id in its metadata for the
callback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from decimal import Decimal
from functools import partial
from types import ModuleType
from typing import Any

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from integrations.litellm.budget import estimate_request
from integrations.litellm.mapping import HOLD_FIELD, KEY_ID_FIELD
from integrations.litellm.metrics import count_decision
from ledger.keys import hash_key
from ledger.settings import Settings, load_settings
from readmodels import ApiKey, DatabaseUnavailableError, Decision, ReadModels, Reason

log = logging.getLogger(__name__)

_GRANTS_MAX = 100_000
# Where a refusal's response body names the reason: {"error": {..., "provider_specific_fields":
# {"ledger_reason": "revoked"}}}.
REASON_FIELD = "ledger_reason"

_STATUS = {Reason.MODEL_NOT_ALLOWED: 403, Reason.OVER_BUDGET: 403}
_MESSAGES = {
    Reason.UNKNOWN_KEY: "unknown API key",
    Reason.REVOKED: "this API key is revoked",
    Reason.DISABLED: "this API key is disabled",
    Reason.EXPIRED: "this API key has expired",
    Reason.MODEL_NOT_ALLOWED: "this API key may not use this model",
    Reason.OVER_BUDGET: "this API key is over its budget",
    Reason.UNAVAILABLE: "the key could not be checked (ledger database unavailable)",
}


def refusal(decision: Decision) -> ProxyException:
    # LiteLLM's response body carries ``code`` (the HTTP status, as a string) and not
    # ``openai_code``: the reason reaches the client in ``provider_specific_fields``, which
    # the body does carry, so a client can tell "retry later" (unavailable) from "revoked".
    return ProxyException(
        message=f"ledger: {_MESSAGES.get(decision.reason, decision.reason.value)}",
        type="auth_error", param="api_key", code=_STATUS.get(decision.reason, 401),
        openai_code=decision.reason.value,
        provider_specific_fields={REASON_FIELD: decision.reason.value})


async def _request_body(request: Request) -> Mapping[str, Any]:
    # The proxy has already parsed the body (JSON or multipart) before custom_auth and cached
    # it in the request's scope as (the keys the client sent, the parsed dict). Read there
    # when it is that shape and still holds only those keys: LiteLLM's reader would return a
    # copy of the same dict, and costs a tenth of the hook (5 us) to make it. Only read here.
    cached = request.scope.get("parsed_body")
    if type(cached) is tuple and len(cached) == 2:
        sent, parsed = cached
        if type(parsed) is dict and len(parsed) == len(sent):
            return parsed
    # Otherwise LiteLLM's own reader (it parses the body when nothing is cached yet).
    try:
        body = await _http_parsing()._read_request_body(request=request)
    except Exception:  # a body LiteLLM cannot parse is refused by LiteLLM itself afterwards
        return {}
    # The type check first: isinstance against the Mapping ABC costs a microsecond.
    return body if type(body) is dict or isinstance(body, Mapping) else {}


def body_bytes_read(request: Request) -> int | None:
    """The size of the request's body as the client sent it, when the proxy read it whole:
    Starlette keeps a body read by ``request.body()`` on the request (``_body``), and that is
    how LiteLLM reads a JSON body, so the length costs nothing to know. None otherwise: a
    form (multipart: an audio file) is streamed and kept nowhere, its file is not prompt
    text, and kept bytes that are not a JSON object (a form read whole by something else)
    are not counted either; a body parsed through another request object is not on this
    one."""
    body = request.__dict__.get("_body")
    if type(body) is bytes and _JSON_OBJECT.match(body):
        return len(body)
    return None


_JSON_OBJECT = re.compile(rb"[ \t\r\n]*\{")  # JSON's whitespace, then an object


_http_parsing_module: ModuleType | None = None


def _http_parsing() -> ModuleType:
    # LiteLLM's request parsing helpers, imported on first use and kept, as the proxy module
    # below: an import statement in the function ran importlib's fromlist handling on every
    # request (a tenth of the hook).
    global _http_parsing_module
    if _http_parsing_module is None:
        from litellm.proxy.common_utils import http_parsing_utils

        _http_parsing_module = http_parsing_utils
    return _http_parsing_module


def _requested_model(request: Request, body: Mapping[str, Any]) -> str:
    model = (body.get("model") or request.path_params.get("model")
             or request.query_params.get("model"))
    return str(model) if model else ""


_proxy_server: ModuleType | None = None


def _master_key() -> str | None:
    # Imported on first use (the proxy's module is heavy) and kept: ``from package import
    # module`` runs importlib's Python fromlist handling on every request otherwise (~1 us).
    global _proxy_server
    if _proxy_server is None:
        from litellm.proxy import proxy_server

        _proxy_server = proxy_server
    key = getattr(_proxy_server, "master_key", None)
    return key if isinstance(key, str) and key else None


class LedgerAuth:
    """The hook as an object: one ``ReadModels`` per process, opened on first use."""

    def __init__(self, settings: Settings | None = None, *, reserve: bool = True) -> None:
        self._settings = settings
        # Hold each call's estimate on the key's budgets (docs/budgets.md); off, budgets are
        # checked against spent + open holds only.
        self._reserve = reserve
        self._readmodels: ReadModels | None = None
        # The open in progress: concurrent first requests share its outcome (one connection
        # attempt, not one per request queued behind the other).
        self._opening: asyncio.Future[ReadModels] | None = None
        self._open_failing = False  # warn once per outage, not once per request
        # key id -> (the ApiKey it was built from, copies of the answer, the id as text).
        # Building a UserAPIKeyAuth costs ~10x copying one; a changed key comes back from the
        # cache as a new object.
        self._grants: dict[uuid.UUID, tuple[ApiKey, RequestCopies, str]] = {}
        # key hash -> key id of every key granted here. A key's hash names it for good, so
        # a call let through unchecked while PostgreSQL is away (AUTHORIZE_ON_DB_ERROR=allow)
        # is still recorded under its ledger key and counts toward its budgets. Attribution
        # only: nothing here decides whether a key may call.
        self._key_ids: dict[str, uuid.UUID] = {}

    def _loaded_settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    async def readmodels(self) -> ReadModels:
        """The process's ``ReadModels``, opened on first use. Raises what the open raises
        (``DatabaseUnavailableError`` when PostgreSQL cannot be reached); the next call
        tries again."""
        if self._readmodels is not None:
            return self._readmodels
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open())
            # Retrieved here, so an open whose every waiter was cancelled logs nothing.
            opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            # Shielded: a request cancelled while waiting does not cancel the others' open.
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self) -> ReadModels:
        models = await ReadModels.open(self._loaded_settings())
        self._readmodels, self._open_failing = models, False
        return models

    async def close(self) -> None:
        if self._readmodels is not None:
            await self._readmodels.close()
            self._readmodels = None

    async def __call__(self, request: Request, api_key: str) -> UserAPIKeyAuth:
        master = _master_key()
        if master is not None and api_key and secrets.compare_digest(api_key, master):
            return UserAPIKeyAuth(api_key=master, user_role=LitellmUserRoles.PROXY_ADMIN)
        body = await _request_body(request)
        model = _requested_model(request, body)
        models = self._readmodels
        if models is None:
            try:
                models = await self.readmodels()
            except DatabaseUnavailableError as exc:
                # Not opened (PostgreSQL away at start): answered as authorize answers when
                # it cannot reach PostgreSQL, and the next request tries to open again.
                return self._unchecked(api_key, exc)
        # The estimate only serves to hold on a budget ceiling: authorize computes it only
        # when one applies to the key, so a key without budgets pays no model lookup and no
        # prompt bound.
        estimate = (partial(self._estimate, models, model, body, request) if self._reserve
                    else None)
        decision = await models.keys.authorize(api_key or "", model, estimate=estimate)
        count_decision(decision.reason)
        if not decision.allowed:
            raise refusal(decision)
        return self._granted(decision, api_key)

    def _unchecked(self, api_key: str, exc: DatabaseUnavailableError) -> UserAPIKeyAuth:
        allow = self._loaded_settings().authorize_on_db_error == "allow"
        decision = Decision(allow, Reason.UNAVAILABLE, None, str(exc))
        count_decision(decision.reason)
        if not self._open_failing:
            self._open_failing = True
            log.warning("ledger read models cannot be opened, each request tries again; "
                        "until then requests are %s: %s",
                        "let through (AUTHORIZE_ON_DB_ERROR=allow)" if allow else "refused",
                        exc)
        if not allow:
            raise refusal(decision)
        return self._granted(decision, api_key)

    async def _estimate(self, models: ReadModels, model: str, body: Mapping[str, Any],
                        request: Request) -> Decimal | None:
        """The most this call should cost, or None when the request sets no ``max_tokens``
        (``max_completion_tokens``; the Responses API's ``max_output_tokens``) or the catalog
        cannot price the model (then nothing is held)."""
        max_tokens = (body.get("max_tokens") or body.get("max_completion_tokens")
                      or body.get("max_output_tokens"))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not model:
            return None
        catalog_model = await models.models.get_by_name(model)
        if catalog_model is None:
            return None
        return estimate_request(catalog_model, max_tokens, body, body_bytes_read(request))

    def _granted(self, decision: Decision, api_key: str) -> UserAPIKeyAuth:
        key = decision.key
        if key is None:  # AUTHORIZE_ON_DB_ERROR=allow and the key was not in the cache
            # The hash, never the plaintext: LiteLLM logs this as user_api_key_hash.
            key_hash = hash_key(api_key or "")
            known = self._key_ids.get(key_hash)
            return UserAPIKeyAuth(api_key=key_hash, metadata={} if known is None
                                  else {KEY_ID_FIELD: str(known)})
        grant = self._grants.get(key.id)
        if grant is None or grant[0] is not key:
            if len(self._grants) >= _GRANTS_MAX:
                self._grants.clear()
                self._key_ids.clear()
            key_id = str(key.id)
            grant = (key, RequestCopies(UserAPIKeyAuth(
                api_key=key.key_hash, key_alias=key.name, user_id=key.owner,
                metadata={KEY_ID_FIELD: key_id})), key_id)
            self._grants[key.id] = grant
            self._key_ids[key.key_hash] = key.id
        metadata = {KEY_ID_FIELD: grant[2]}  # the id as text, kept: UUID.__str__ costs 1 us
        if decision.hold_id is not None:
            metadata[HOLD_FIELD] = decision.hold_id
        # A copy per request: LiteLLM writes request-scoped fields into the object it gets.
        return grant[1].copy(metadata)


class RequestCopies:
    """Per-request copies of one key's ``UserAPIKeyAuth``: LiteLLM writes request-scoped
    fields into the object custom_auth returns, so each request gets its own.

    A copy is what ``auth.model_copy(update={"metadata": ...})`` makes, built the way
    pydantic 2's ``__copy__`` builds a shallow copy, with what does not change between
    requests worked out once: 2.6 against 8.5 us for ``model_copy`` (the object has 120-odd
    fields, and every request is given one). tests/integrations/test_litellm_auth.py holds
    the two equal, fields set and private attributes included.
    """

    __slots__ = ("_extra", "_fields_set", "_private", "auth")

    def __init__(self, auth: UserAPIKeyAuth) -> None:
        self.auth = auth
        self._extra = auth.__pydantic_extra__
        self._fields_set = auth.__pydantic_fields_set__ | _METADATA
        private = auth.__pydantic_private__
        self._private = None if private is None else {
            name: value for name, value in private.items() if value is not PydanticUndefined}

    def copy(self, metadata: dict[str, str]) -> UserAPIKeyAuth:
        copied = _new_object(type(self.auth))
        state = self.auth.__dict__.copy()
        state["metadata"] = metadata
        # BaseModel's slots, set through their descriptors as object.__setattr__ would set
        # them, without its lookup through the class's long MRO. Each copy gets its own
        # fields-set and private dict: pydantic adds to them when LiteLLM sets a field.
        _set_dict(copied, state)
        _set_extra(copied, None if self._extra is None else self._extra.copy())
        _set_fields_set(copied, self._fields_set.copy())
        _set_private(copied, None if self._private is None else self._private.copy())
        return copied


_new_object = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_METADATA = frozenset({"metadata"})


# The function a proxy config names: ``custom_auth: integrations.litellm.user_api_key_auth``.
ledger_auth = LedgerAuth()


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    return await ledger_auth(request, api_key)
