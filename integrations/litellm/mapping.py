"""What LiteLLM reports about one finished call -> the fields of one ``UsageRecorded``.

Pure functions over the callback's ``kwargs`` (its ``standard_logging_object``, "SLO") and
response, so the callback stays a thin shell and every rule here is tested on its own.

* ``event_id`` and ``occurred_at`` are derived from the call, not drawn at random: a callback
  LiteLLM runs twice for one call (a retried logging task, success logged by two code
  paths) builds the same event, which the projector counts once (dedup by event_id).
* No ``cost_usd``: the projector prices the event exactly from the catalog as of
  ``occurred_at``. LiteLLM's float ``response_cost`` is kept in ``metadata`` for comparison.
* The key: the id the ledger's ``custom_auth`` put on the request, else an id derived from
  LiteLLM's own virtual-key hash, else one fixed "anonymous" id, so no call goes unrecorded.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.fields import SERVICE_TIERS

# Fixed forever: changing it would give a re-sent old call another event_id.
NAMESPACE = uuid.UUID("0b6f8a56-0d2c-5d7e-9a51-6c1d2f0e4b17")
ANONYMOUS_KEY_ID = uuid.uuid5(NAMESPACE, "litellm-anonymous")
# Where the ledger's custom_auth leaves the key id (UserAPIKeyAuth.metadata), and where an
# SDK caller may put it (``metadata=`` of litellm.acompletion).
KEY_ID_FIELD = "ledger_api_key_id"

_EMPTY: Mapping[str, Any] = {}


def _mapping(value: object) -> Mapping[str, Any]:
    # The type check first: isinstance against the Mapping ABC costs a microsecond, and
    # this runs a dozen times per call on LiteLLM's path; what LiteLLM passes is a dict.
    if type(value) is dict:
        return value
    if value is None:  # absent details are None, and the ABC check is slow for those too
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


def _count(value: object) -> int:
    # LiteLLM reports absent counters as None (and, from some providers, as floats).
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


def _text(value: object, limit: int = 512) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _usage(kwargs: Mapping[str, Any], response: object) -> Mapping[str, Any]:
    slo = _mapping(kwargs.get("standard_logging_object"))
    found = _mapping(slo.get("metadata")).get("usage_object") or _mapping(
        slo.get("hidden_params")).get("usage_object")
    if isinstance(found, Mapping):
        return found
    usage = getattr(response, "usage", None)
    dump = getattr(usage, "model_dump", None)
    return _mapping(dump()) if callable(dump) else _EMPTY


def token_counts(usage: Mapping[str, Any], slo: Mapping[str, Any]) -> dict[str, Any]:
    """Every token kind LiteLLM reports, in the ledger's names (sub-counts inside totals)."""
    prompt_details = _mapping(usage.get("prompt_tokens_details"))
    completion_details = _mapping(usage.get("completion_tokens_details"))
    prompt = usage.get("prompt_tokens", slo.get("prompt_tokens"))
    completion = usage.get("completion_tokens", slo.get("completion_tokens"))
    return {
        "prompt_tokens": _count(prompt),
        "completion_tokens": _count(completion),
        # Anthropic-style top-level fields first, OpenAI-style details otherwise.
        "cache_read_input_tokens": _count(
            usage.get("cache_read_input_tokens") or prompt_details.get("cached_tokens")),
        "cache_creation_input_tokens": _count(
            usage.get("cache_creation_input_tokens")
            or prompt_details.get("cache_creation_tokens")
            or prompt_details.get("cache_write_tokens")),
        "reasoning_tokens": _count(completion_details.get("reasoning_tokens")),
        "audio_input_tokens": _count(prompt_details.get("audio_tokens")),
        "audio_output_tokens": _count(completion_details.get("audio_tokens")),
        "images": _count(usage.get("output_image_count")),
    }


def request_id_of(kwargs: Mapping[str, Any]) -> str | None:
    """The id LiteLLM assigns to the call (``x-litellm-call-id``)."""
    slo = _mapping(kwargs.get("standard_logging_object"))
    return _text(slo.get("litellm_call_id") or kwargs.get("litellm_call_id") or slo.get("id"))


def auth_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the custom_auth hook put in ``UserAPIKeyAuth.metadata`` for this call."""
    slo_meta = _mapping(_mapping(kwargs.get("standard_logging_object")).get("metadata"))
    found = slo_meta.get("user_api_key_auth_metadata")
    if isinstance(found, Mapping):
        return found
    params_meta = _mapping(_mapping(kwargs.get("litellm_params")).get("metadata"))
    return _mapping(params_meta.get("user_api_key_metadata"))


def derived_id(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))``, in half the time (no UUID object is built:
    the event's validator parses the text)."""
    digest = bytearray(_sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_sha1 = hashlib.sha1
_NAMESPACE_BYTES = NAMESPACE.bytes
# Key ids already seen, as their canonical text: a proxy has few keys and many calls.
_KEY_IDS: dict[str, str] = {}
_KEY_IDS_MAX = 100_000


def _canonical_key_id(candidate: object) -> str | None:
    text = str(candidate)
    known = _KEY_IDS.get(text)
    if known is None:
        try:
            known = str(uuid.UUID(text))
        except ValueError:
            return None
        if len(_KEY_IDS) >= _KEY_IDS_MAX:
            _KEY_IDS.clear()
        _KEY_IDS[text] = known
    return known


def api_key_id_of(kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """(key id, where it came from): ``ledger``, ``litellm_key`` or ``anonymous``."""
    slo_meta = _mapping(_mapping(kwargs.get("standard_logging_object")).get("metadata"))
    params_meta = _mapping(_mapping(kwargs.get("litellm_params")).get("metadata"))
    for candidate in (auth_metadata(kwargs).get(KEY_ID_FIELD), params_meta.get(KEY_ID_FIELD)):
        if candidate:
            key_id = _canonical_key_id(candidate)
            if key_id is not None:
                return key_id, "ledger"
    litellm_hash = slo_meta.get("user_api_key_hash") or params_meta.get("user_api_key_hash")
    if litellm_hash:
        return derived_id(f"litellm-key:{litellm_hash}"), "litellm_key"
    return _ANONYMOUS, "anonymous"


_ANONYMOUS = str(ANONYMOUS_KEY_ID)


def _service_tier(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> str | None:
    breakdown = _mapping(slo.get("cost_breakdown"))
    tier = (breakdown.get("service_tier") or _mapping(slo.get("model_parameters")).get(
        "service_tier") or kwargs.get("service_tier"))
    return str(tier) if tier else None


def usage_fields(kwargs: Mapping[str, Any], response: object) -> dict[str, Any]:
    """The fields of the call's ``UsageRecorded`` but its ``source`` (ids as text).

    Raises ``ValueError`` when LiteLLM gave no call id: without one a retried callback
    could not be deduplicated.
    """
    slo = _mapping(kwargs.get("standard_logging_object"))
    request_id = request_id_of(kwargs)
    if request_id is None:
        raise ValueError("LiteLLM reported no call id (litellm_call_id)")
    key_id, key_source = api_key_id_of(kwargs)
    model = _text(slo.get("model") or _mapping(slo.get("hidden_params")).get(
        "litellm_model_name") or kwargs.get("model"))
    requested = _text(slo.get("model_group"))
    failed = slo.get("status", "success") != "success"
    tier = _service_tier(kwargs, slo)
    ended = slo.get("endTime") or slo.get("startTime")
    response_time = slo.get("response_time")
    cost = slo.get("response_cost")
    # Only what is there: absent entries are not written as empty strings.
    metadata = {"litellm_key_source": key_source}
    call_type = slo.get("call_type") or kwargs.get("call_type")
    if call_type:
        metadata["litellm_call_type"] = str(call_type)
    if isinstance(cost, int | float):
        # repr: the float exactly as LiteLLM computed it, for the comparison with ours.
        metadata["litellm_response_cost"] = repr(float(cost))
    if slo.get("stream"):
        metadata["litellm_stream"] = "true"
    if slo.get("cache_hit"):
        metadata["litellm_cache_hit"] = "true"
    alias = _text(_mapping(slo.get("metadata")).get("user_api_key_alias"))
    if alias:
        metadata["litellm_key_alias"] = alias
    if tier and tier not in SERVICE_TIERS:
        metadata["litellm_service_tier"] = tier[:512]
    error_code = None
    if failed:
        error = _mapping(slo.get("error_information"))
        error_code = _text(error.get("error_code") or error.get("error_class"))
        error_class = _text(error.get("error_class"))
        if error_class:
            metadata["litellm_error_class"] = error_class
    usage = _usage(kwargs, response)
    fields = token_counts(usage, slo)
    # Cache writes kept for an hour cost more; usage.recorded has no field for them yet, so
    # they are priced at the 5-minute rate and their count is kept here to be seen.
    writes = _mapping(_mapping(usage.get("prompt_tokens_details")).get(
        "cache_creation_token_details"))
    if writes and _count(writes.get("ephemeral_1h_input_tokens")):
        metadata["litellm_cache_creation_1h_tokens"] = str(
            _count(writes.get("ephemeral_1h_input_tokens")))
    fields.update(
        event_id=derived_id(f"litellm-call:{request_id}"),
        api_key_id=key_id,
        request_id=request_id,
        model=model or "unknown",
        requested_model=requested if requested and requested != model else None,
        provider=_text(slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider")),
        status="error" if failed else "success",
        error_code=error_code,
        service_tier=tier if tier in SERVICE_TIERS else None,
        latency_ms=(round(float(response_time) * 1000)
                    if isinstance(response_time, int | float) and response_time >= 0 else None),
        occurred_at=(datetime.fromtimestamp(float(ended), UTC)
                     if isinstance(ended, int | float) else datetime.now(UTC)),
        metadata=metadata,
    )
    return fields
