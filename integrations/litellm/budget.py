"""Budget reservations for LiteLLM calls: the estimate the auth hook reserves.

The auth hook passes ``estimate_usd`` to ``ReadModels.keys.authorize`` when it can estimate
the call (the request's ``max_tokens`` at the model's prices, exactly, by ``ledger.pricing``):
an allowed decision then holds that amount on every budget ceiling of the key
(docs/budgets.md) and its ``hold_id`` travels in the key's auth metadata to the callback, which
puts it on the ``UsageRecorded`` it emits; projecting that event settles the hold with the
actual cost. A failed call is recorded too (status ``error``), so its hold is settled as well.
A request without ``max_tokens`` is checked against spent + open holds only (best effort).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic_core import to_json

from readmodels import Model


def prompt_token_bound(body: Mapping[str, Any], sent_bytes: int | None = None) -> int:
    """At most this many prompt tokens: the bytes of the whole request body, as the client
    sent it (``sent_bytes``: the JSON body's size as read) or else as compact JSON.

    Every part of a request can become prompt tokens: the messages (or embedding input), and
    also tool and function definitions, a top-level ``system``, a response format's schema.
    So the bound covers the whole body, not the messages alone: a large tool list with a
    short message would otherwise cost more than its hold. A BPE token is at least one byte
    and the JSON punctuation (about 30 bytes a message) outweighs the few tokens a chat
    template adds per message, so this over-reserves (about 4x for English text) rather
    than letting a call cost more than its hold.

    The client's JSON is at least as long as the compact JSON of what it says (whitespace,
    escapes), and its length costs nothing to know, where writing the body again costs about
    1 us per KB (50 us for a 50 KB conversation) on the auth hook's path. Without it,
    pydantic-core writes it: the same bytes as ``json.dumps`` without spaces (a value JSON
    has no form for is written as its text).
    """
    if sent_bytes is not None:
        return sent_bytes
    if not body:
        return 0
    try:
        return len(to_json(body, fallback=str))
    except ValueError:  # PydanticSerializationError: a cycle, a key JSON cannot have
        return len(str(body).encode())


def estimate_cost(model: Model, max_tokens: int, prompt_tokens: int = 0) -> Decimal | None:
    """At most what ``max_tokens`` completion tokens and ``prompt_tokens`` prompt tokens cost
    at the model's prices, exactly: each token at the highest rate of its kind the model
    has (a long-context tier included), plus any per-request price. None when the catalog
    has no token price for the model. The rates are taken once per model version: this runs
    on the auth hook's path for every request (``ledger.pricing.price`` costs ~90 us)."""
    rates = _rates(model)
    return None if rates is None else _at(rates, max_tokens, prompt_tokens)


def estimate_request(model: Model, max_tokens: int, body: Mapping[str, Any],
                     sent_bytes: int | None = None) -> Decimal | None:
    """``estimate_cost`` of a request body's ``max_tokens`` (for each completion it asks
    for) and prompt bound (``prompt_token_bound``; ``sent_bytes``: the JSON body's size as
    sent, when known); the bound only when the model has token rates to apply it to."""
    rates = _rates(model)
    if rates is None:
        return None
    return _at(rates, max_tokens * completions_per_request(body),
               prompt_token_bound(body, sent_bytes))


def _at(rates: tuple[Decimal, Decimal, Decimal], max_tokens: int, prompt_tokens: int) -> Decimal:
    per_prompt, per_completion, per_request = rates
    return per_prompt * max(prompt_tokens, 0) + per_completion * max(max_tokens, 0) + per_request


def completions_per_request(body: Mapping[str, Any]) -> int:
    """How many completions of up to ``max_tokens`` each the request may generate: ``n``
    choices, or ``best_of`` candidates (legacy completions; generated and billed, though
    only ``n`` are returned), whichever is more; 1 when neither is a positive integer."""
    most = 1
    for name in ("n", "best_of"):
        value = body.get(name)
        if type(value) is int and value > most:
            most = value
    return most


_RATES: dict[tuple[str, object], tuple[Decimal, Decimal, Decimal] | None] = {}


def _rates(model: Model) -> tuple[Decimal, Decimal, Decimal] | None:
    key = (model.name, model.updated_at)
    if key not in _RATES:
        if len(_RATES) > 4096:
            _RATES.clear()
        _RATES[key] = _highest_rates(model.prices)
    return _RATES[key]


def _highest_rates(prices: Mapping[str, Decimal]) -> tuple[Decimal, Decimal, Decimal] | None:
    def highest(*prefixes: str) -> Decimal | None:
        found = [v for k, v in prices.items()
                 if k.startswith(prefixes) and "batches" not in k]  # batch API: cheaper
        return max(found) if found else None

    # A prompt token may be billed as a cache write or as audio, a completion token as
    # reasoning or audio: the bound takes the dearest rate each could be billed at.
    prompt = highest("input_cost_per_token", "input_cost_per_audio_token",
                     "cache_creation_input_token_cost", "cache_creation_input_audio_token_cost")
    completion = highest("output_cost_per_token", "output_cost_per_reasoning_token",
                         "output_cost_per_audio_token")
    if prompt is None or completion is None:
        return None
    return prompt, completion, highest("input_cost_per_request") or Decimal(0)
