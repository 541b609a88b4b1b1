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
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.fields import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    MAX_COUNT,
    MAX_TEXT_LENGTH,
    SERVICE_TIERS,
)
from ledger.wiretext import PLAIN_TEXT_REFUSES

# Fixed forever: changing it would give a re-sent old call another event_id.
NAMESPACE = uuid.UUID("0b6f8a56-0d2c-5d7e-9a51-6c1d2f0e4b17")
ANONYMOUS_KEY_ID = uuid.uuid5(NAMESPACE, "litellm-anonymous")
# Where the ledger's custom_auth leaves the key id (UserAPIKeyAuth.metadata), and where an
# SDK caller may put it (``metadata=`` of litellm.acompletion).
KEY_ID_FIELD = "ledger_api_key_id"
HOLD_FIELD = "ledger_hold_id"  # set by the auth hook when it held an estimate

_EMPTY: Mapping[str, Any] = {}
# Refused in every text field of the wire (ledger.wiretext): dropped, not sent to be refused.
_REFUSED_CHARACTERS = re.compile(f"[{PLAIN_TEXT_REFUSES}\ud800-\udfff]")
_EARLIEST_TIMESTAMP = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC).timestamp()
_LATEST_TIMESTAMP = datetime(LATEST_YEAR + 1, 1, 1, tzinfo=UTC).timestamp()


def _mapping(value: object) -> Mapping[str, Any]:
    # The type check first: isinstance against the Mapping ABC costs a microsecond, and
    # this runs a dozen times per call on LiteLLM's path; what LiteLLM passes is a dict.
    if type(value) is dict:
        return value
    if value is None:  # absent details are None, and the ABC check is slow for those too
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


def _count(value: object) -> int:
    # LiteLLM reports absent counters as None (and, from some providers, as floats). What the
    # wire cannot carry (NaN, negatives) reads as 0 and anything above MAX_COUNT as MAX_COUNT
    # (flagged in the metadata by usage_fields): refused, the call would go unrecorded.
    # The common cases first, None among them: isinstance against a union type costs
    # several times a call, and this runs eight times per call on LiteLLM's path.
    if type(value) is int:
        return value if 0 < value <= MAX_COUNT else (0 if value <= 0 else MAX_COUNT)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not (
            value > 0):
        return 0
    return MAX_COUNT if value >= MAX_COUNT else int(value)


def _text(value: object, limit: int = MAX_TEXT_LENGTH) -> str | None:
    """``value`` as text the wire takes: characters it refuses (controls, lone surrogates)
    dropped, cut to ``limit``; None when nothing is left."""
    if value is None:
        return None
    text = str(value)
    if not text.isprintable():  # a C-speed test first: the usual text has nothing to drop
        text = _REFUSED_CHARACTERS.sub("", text)
    text = text.strip()
    return text[:limit] if text else None


def _timestamp(ended: object) -> float:
    """When the call ended, if LiteLLM's timestamp is one the wire takes; else now (the time
    of the callback, not of the event's making)."""
    if (type(ended) is float or isinstance(ended, int | float)) and (
            _EARLIEST_TIMESTAMP <= ended < _LATEST_TIMESTAMP):
        return float(ended)
    return time.time()


def _usage(slo: Mapping[str, Any], slo_meta: Mapping[str, Any], hidden: Mapping[str, Any],
           response: object) -> Mapping[str, Any]:
    found = slo_meta.get("usage_object") or hidden.get("usage_object")
    if type(found) is dict or (found is not None and isinstance(found, Mapping)):
        return found
    usage = getattr(response, "usage", None)
    dump = getattr(usage, "model_dump", None)
    return _mapping(dump()) if callable(dump) else _EMPTY


def token_counts(usage: Mapping[str, Any], slo: Mapping[str, Any]) -> dict[str, Any]:
    """Every token kind LiteLLM reports, in the ledger's names (sub-counts inside totals),
    and the images the model generated."""
    get = usage.get
    prompt_details = _mapping(get("prompt_tokens_details"))
    completion_details = _mapping(get("completion_tokens_details"))
    return {
        "prompt_tokens": _count(get("prompt_tokens", slo.get("prompt_tokens"))),
        "completion_tokens": _count(get("completion_tokens", slo.get("completion_tokens"))),
        # Anthropic-style top-level fields first, OpenAI-style details otherwise.
        "cache_read_input_tokens": _count(
            get("cache_read_input_tokens") or prompt_details.get("cached_tokens")),
        "cache_creation_input_tokens": _count(
            get("cache_creation_input_tokens")
            or prompt_details.get("cache_creation_tokens")
            or prompt_details.get("cache_write_tokens")),
        "reasoning_tokens": _count(completion_details.get("reasoning_tokens")),
        "audio_input_tokens": _count(prompt_details.get("audio_tokens")),
        "audio_output_tokens": _count(completion_details.get("audio_tokens")),
        # Images the model generated (LiteLLM's image responses: len(data)). LiteLLM reports
        # no count of input images (only their tokens, inside prompt_tokens), so ``images``
        # stays 0: a generated image priced as an input image would cost 122x too little.
        "output_images": _count(get("output_image_count")),
    }


def _request_id(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> str | None:
    return _text(slo.get("litellm_call_id") or kwargs.get("litellm_call_id") or slo.get("id"))


def request_id_of(kwargs: Mapping[str, Any]) -> str | None:
    """The id LiteLLM assigns to the call (``x-litellm-call-id``)."""
    return _request_id(kwargs, _mapping(kwargs.get("standard_logging_object")))


def _params_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(kwargs.get("litellm_params")).get("metadata"))


def _auth_metadata(slo_meta: Mapping[str, Any],
                   params_meta: Mapping[str, Any]) -> Mapping[str, Any]:
    found = slo_meta.get("user_api_key_auth_metadata")
    # The ABC check costs a microsecond, for None too: the common cases first.
    if type(found) is dict or (found is not None and isinstance(found, Mapping)):
        return found
    return _mapping(params_meta.get("user_api_key_metadata"))


def auth_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the custom_auth hook put in ``UserAPIKeyAuth.metadata`` for this call."""
    slo_meta = _mapping(_mapping(kwargs.get("standard_logging_object")).get("metadata"))
    return _auth_metadata(slo_meta, _params_metadata(kwargs))


def derived_id(name: str) -> uuid.UUID:
    """``uuid.uuid5(NAMESPACE, name)`` in less time: the namespace's bytes are computed once,
    the version and variant bits set on the integer (uuid5 goes through bytes), and the UUID
    made as ``UUID.__init__`` makes it, without its argument checks (a third of the cost)."""
    value = (int.from_bytes(_sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16], "big")
             & _CLEAR_VERSION) | _VERSION_5
    made = _new_object(_UUID)
    _set_attribute(made, "int", value)
    _set_attribute(made, "is_safe", _SAFETY_UNKNOWN)
    return made


_UUID = uuid.UUID
_sha1 = hashlib.sha1
_new_object, _set_attribute = object.__new__, object.__setattr__
_SAFETY_UNKNOWN = uuid.SafeUUID.unknown
_NAMESPACE_BYTES = NAMESPACE.bytes
_CLEAR_VERSION = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_5 = (5 << 76) | (0x8000 << 48)  # version 5, RFC 4122 variant
# Key ids already seen, as UUIDs: a proxy has few keys and many calls, and the event's
# validator takes a UUID object in less time than it parses the text.
_KEY_IDS: dict[str, uuid.UUID] = {}
_KEY_IDS_MAX = 100_000


def _canonical_key_id(candidate: object) -> uuid.UUID | None:
    text = str(candidate)
    known = _KEY_IDS.get(text)
    if known is None:
        try:
            known = _UUID(text)
        except ValueError:
            return None
        if len(_KEY_IDS) >= _KEY_IDS_MAX:
            _KEY_IDS.clear()
        _KEY_IDS[text] = known
    return known


def _key_id(auth: Mapping[str, Any], slo_meta: Mapping[str, Any],
            params_meta: Mapping[str, Any]) -> tuple[uuid.UUID, str]:
    for candidate in (auth.get(KEY_ID_FIELD), params_meta.get(KEY_ID_FIELD)):
        if candidate:
            key_id = _canonical_key_id(candidate)
            if key_id is not None:
                return key_id, "ledger"
    litellm_hash = slo_meta.get("user_api_key_hash") or params_meta.get("user_api_key_hash")
    if litellm_hash:
        return derived_id(f"litellm-key:{litellm_hash}"), "litellm_key"
    return ANONYMOUS_KEY_ID, "anonymous"


def api_key_id_of(kwargs: Mapping[str, Any]) -> tuple[uuid.UUID, str]:
    """(key id, where it came from): ``ledger``, ``litellm_key`` or ``anonymous``."""
    slo_meta = _mapping(_mapping(kwargs.get("standard_logging_object")).get("metadata"))
    params_meta = _params_metadata(kwargs)
    return _key_id(_auth_metadata(slo_meta, params_meta), slo_meta, params_meta)




def _service_tier(kwargs: Mapping[str, Any], slo: Mapping[str, Any]) -> str | None:
    breakdown = _mapping(slo.get("cost_breakdown"))
    tier = (breakdown.get("service_tier") or _mapping(slo.get("model_parameters")).get(
        "service_tier") or kwargs.get("service_tier"))
    return _text(tier) if tier else None


def usage_fields(kwargs: Mapping[str, Any], response: object) -> dict[str, Any]:
    """The fields of the call's ``UsageRecorded`` but its ``source`` (ids as UUIDs).

    Raises ``ValueError`` when LiteLLM gave no call id: without one a retried callback
    could not be deduplicated.
    """
    return finish_fields(read_call(kwargs, response))


def finish_fields(read: Mapping[str, Any]) -> dict[str, Any]:
    """``read_call``'s fields made ``usage_fields``': what is computed from the plain values
    it kept, the event id from the call id, ``occurred_at`` from the timestamp and LiteLLM's
    cost as text. A new dict: ``read`` is left as it was, to be finished again if need be
    (a call put back in the callback's queue)."""
    fields = dict(read)
    fields["event_id"] = derived_id(f"litellm-call:{read['request_id']}")
    fields["occurred_at"] = datetime.fromtimestamp(read["occurred_at"], UTC)
    cost = read["metadata"].get("litellm_response_cost")
    if cost is not None:
        # repr: the float exactly as LiteLLM computed it, for the comparison with ours.
        fields["metadata"] = {**read["metadata"], "litellm_response_cost": repr(cost)}
    return fields


def read_call(kwargs: Mapping[str, Any], response: object) -> dict[str, Any]:
    """What LiteLLM reported about the call, read while its objects are as they were (the
    callback's step 1, on LiteLLM's path): ``usage_fields`` but for what ``finish_fields``
    computes later from plain values kept here (a text, two floats), a third of the time.

    Raises ``ValueError`` when LiteLLM gave no call id.
    """
    # Each nested mapping is read once: this runs on LiteLLM's path for every call, where a
    # lookup more or less is a measurable share of the callback's cost.
    slo = _mapping(kwargs.get("standard_logging_object"))
    request_id = _request_id(kwargs, slo)
    if request_id is None:
        raise ValueError("LiteLLM reported no call id (litellm_call_id)")
    slo_meta = _mapping(slo.get("metadata"))
    params_meta = _params_metadata(kwargs)
    hidden = _mapping(slo.get("hidden_params"))
    auth = _auth_metadata(slo_meta, params_meta)
    key_id, key_source = _key_id(auth, slo_meta, params_meta)
    model = _text(slo.get("model") or hidden.get("litellm_model_name") or kwargs.get("model"))
    requested = _text(slo.get("model_group"))
    failed = slo.get("status", "success") != "success"
    tier = _service_tier(kwargs, slo)
    ended = slo.get("endTime") or slo.get("startTime")
    response_time = slo.get("response_time")
    cost = slo.get("response_cost")
    # Only what is there: absent entries are not written as empty strings.
    metadata: dict[str, Any] = {"litellm_key_source": key_source}
    call_type = slo.get("call_type") or kwargs.get("call_type")
    if call_type:
        metadata["litellm_call_type"] = _text(call_type) or "unknown"
    if type(cost) is float or (cost is not None and isinstance(cost, int | float)):
        metadata["litellm_response_cost"] = float(cost)  # written as text by finish_fields
    if slo.get("stream"):
        metadata["litellm_stream"] = "true"
    if slo.get("cache_hit"):
        metadata["litellm_cache_hit"] = "true"
    alias = _text(slo_meta.get("user_api_key_alias"))
    if alias:
        metadata["litellm_key_alias"] = alias
    if tier and tier not in SERVICE_TIERS:
        metadata["litellm_service_tier"] = tier
    error_code = None
    if failed:
        error = _mapping(slo.get("error_information"))
        error_code = _text(error.get("error_code") or error.get("error_class"))
        error_class = _text(error.get("error_class"))
        if error_class:
            metadata["litellm_error_class"] = error_class
    usage = _usage(slo, slo_meta, hidden, response)
    counts = token_counts(usage, slo)
    if MAX_COUNT in counts.values():  # more than one event may carry: kept at the maximum
        metadata["litellm_counts_at_maximum"] = ",".join(
            name for name, count in counts.items() if count == MAX_COUNT)
    # Cache writes kept for an hour cost more; usage.recorded has no field for them yet, so
    # they are priced at the 5-minute rate and their count is kept here to be seen.
    writes = _mapping(_mapping(usage.get("prompt_tokens_details")).get(
        "cache_creation_token_details"))
    if writes and _count(writes.get("ephemeral_1h_input_tokens")):
        metadata["litellm_cache_creation_1h_tokens"] = str(
            _count(writes.get("ephemeral_1h_input_tokens")))
    if type(response_time) is not float and (
            response_time is None or not isinstance(response_time, int | float)):
        response_time = None
    return {
        **counts,
        "event_id": None,  # finish_fields: derived from request_id
        "api_key_id": key_id,
        "request_id": request_id,
        "model": model or "unknown",
        "requested_model": requested if requested and requested != model else None,
        "provider": _text(slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider")),
        "status": "error" if failed else "success",
        "error_code": error_code,
        "service_tier": tier if tier in SERVICE_TIERS else None,
        "latency_ms": (min(round(float(response_time) * 1000), MAX_COUNT)
                       if response_time is not None and 0 <= response_time < MAX_COUNT else None),
        "occurred_at": _timestamp(ended),  # finish_fields: as a datetime
        "metadata": metadata,
        # The budget hold the auth hook took for this call: projecting the event settles it.
        "hold_id": _text(auth.get(HOLD_FIELD)),
    }
