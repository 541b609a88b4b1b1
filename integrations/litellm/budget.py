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

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ledger.catalog import ModelRecord
from ledger.pricing import Usage, price
from readmodels import Model


def prompt_token_bound(body: Mapping[str, Any]) -> int:
    """At most this many prompt tokens: the bytes of the request's messages (or embedding
    input) as JSON. A BPE token is at least one byte and the JSON punctuation outweighs the
    few tokens a chat template adds per message, so this over-reserves (about 4x for English
    text) rather than letting a call cost more than its hold."""
    prompt = body.get("messages", body.get("input", body.get("prompt")))
    if prompt is None:
        return 0
    return len(json.dumps(prompt, ensure_ascii=False, default=str).encode())


def estimate_cost(model: Model, max_tokens: int, prompt_tokens: int = 0) -> Decimal | None:
    """``max_tokens`` completion tokens and ``prompt_tokens`` prompt tokens at the model's
    standard prices, exactly; None when the catalog has no price for what it would bill."""
    record = ModelRecord.from_berriai(
        model.name, {**model.prices, "litellm_provider": model.provider, "mode": model.mode})
    breakdown = price(record, Usage(prompt_tokens=max(prompt_tokens, 0),
                                    completion_tokens=max(max_tokens, 0)))
    return None if breakdown.unpriced else breakdown.total
