"""TrafficGenerator: repeatable gateway traffic for the demo — keys, usage, duplicates, poison.

Everything but the ids is drawn from one seeded ``random.Random``, so ``--seed`` reproduces a
run's traffic; ids are fresh so that runs on one stack reconcile apart. Keys and
models are Zipf-distributed (a few hot keys and models, a long tail), usage is spread over the
current month and the two before it, and half the events carry the gateway's own cost while
the other half are left for the projector to price from the catalog.

Token counts come from a palette of usage shapes drawn once from the same distributions, so
the ground-truth cost of a (model, shape, off-peak or not) is priced once by
``ledger.pricing.price`` and then reused: pricing every event here cost ~100 us each and
made the generator, not the ledger, the demo's bottleneck. The projector still prices each
event it receives without a cost on its own.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.catalog import ModelRecord
from ledger.events import ApiKeyCreated, UsageRecorded
from ledger.keys import generate_key, hash_key
from ledger.pricing import Usage, price
from ledger.pricing_time import off_peak_block

# Names gateways see most; those present in the price map come first, the rest is filled
# from the big providers' chat models.
_PREFERRED = (
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini",
    "o4-mini", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-5", "gpt-5-mini", "gpt-5-nano",
    "gemini/gemini-2.5-pro", "gemini/gemini-2.5-flash", "mistral/mistral-large-latest",
    "mistral/mistral-small-latest", "mistral/codestral-latest", "deepseek/deepseek-chat",
    "deepseek/deepseek-reasoner", "perplexity/sonar", "perplexity/sonar-pro", "azure/gpt-4o",
    "azure/gpt-4o-mini", "gpt-4o-2024-08-06",
)
_FILL_PROVIDERS = ("anthropic", "openai", "gemini", "mistral", "xai", "groq", "deepseek")
ZIPF_S = 1.1
SOURCE = "ledger-demo"
SHAPES = 512  # distinct (prompt, completion, cache read) triples in a run


def popular_chat_models(price_map: Mapping[str, Mapping[str, Any]], count: int = 50) -> list[str]:
    def priced_chat(name: str) -> bool:
        entry = price_map.get(name, {})
        return (entry.get("mode") == "chat" and entry.get("input_cost_per_token") is not None
                and entry.get("output_cost_per_token") is not None)

    chosen = [n for n in _PREFERRED if priced_chat(n)]
    pools = [sorted(n for n, e in price_map.items() if e.get("litellm_provider") == provider
                    and priced_chat(n) and n not in chosen) for provider in _FILL_PROVIDERS]
    for round_robin in itertools.zip_longest(*pools):  # one of each provider in turn
        chosen.extend(name for name in round_robin if name is not None)
    return chosen[:count]


def zipf_cum_weights(n: int, s: float = ZIPF_S) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank ** s) for rank in range(1, n + 1)))


@dataclass
class DemoKey:
    event: ApiKeyCreated
    plaintext: str

    @property
    def id(self) -> uuid.UUID:
        return self.event.api_key_id


@dataclass
class Expected:
    """What was emitted, each event once: the reconciliation's ground truth."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    by_month: dict[str, Decimal] = field(default_factory=dict)

    def add(self, event: UsageRecorded, cost: Decimal | None) -> None:
        self.requests += 1
        self.errors += event.status == "error"
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        if cost is None:
            self.unpriced += 1
            return
        self.cost_usd += cost
        utc = event.occurred_at.astimezone(UTC)
        month = f"{utc.year:04d}-{utc.month:02d}"
        self.by_month[month] = self.by_month.get(month, Decimal(0)) + cost


class TrafficGenerator:
    def __init__(self, seed: int, price_map: Mapping[str, Mapping[str, Any]], *,
                 now: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.price_map = price_map
        self.now = now or datetime.now(UTC)
        start = self.now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for _ in range(2):
            start = (start - timedelta(days=1)).replace(day=1)
        self.window_start = start  # first day of the month two months ago
        self.models = popular_chat_models(price_map)
        self.records = {n: ModelRecord.from_berriai(n, price_map[n]) for n in self.models}
        self.model_weights = zipf_cum_weights(len(self.models))
        self.expected = Expected()
        self.shapes = [self._shape() for _ in range(SHAPES)]
        # (model, shape index, inside an off-peak window) -> cost: all that price() reads here.
        self._costs: dict[tuple[str, int, bool], Decimal | None] = {}

    def _shape(self) -> tuple[int, int, int]:
        prompt = int(self.rng.lognormvariate(6.5, 1.0)) + 1
        completion = int(self.rng.lognormvariate(5.0, 1.0)) + 1
        cache_read = prompt // 2 if self.rng.random() < 0.2 else 0
        return prompt, completion, cache_read

    def _cost(self, model: str, shape: int, occurred_at: datetime) -> Decimal | None:
        record = self.records[model]
        off_peak = (record.has_off_peak_pricing
                    and off_peak_block(record.raw, occurred_at) is not None)
        key = (model, shape, off_peak)
        if key not in self._costs:
            prompt, completion, cache_read = self.shapes[shape]
            usage = Usage(prompt_tokens=prompt, completion_tokens=completion,
                          cache_read_input_tokens=cache_read,
                          reasoning_tokens=_reasoning(model, completion))
            breakdown = price(record, usage, at=occurred_at)
            self._costs[key] = None if breakdown.unpriced else breakdown.total
        return self._costs[key]

    def keys(self, count: int) -> list[DemoKey]:
        """Keys with a mix of budgets, allowed-model lists and expiry dates."""
        made = []
        for index in range(count):
            plaintext = generate_key()
            roll = self.rng.random()
            made.append(DemoKey(ApiKeyCreated(
                event_id=uuid.uuid4(), occurred_at=self.window_start, source=SOURCE,
                api_key_id=uuid.uuid4(),  # new per run: runs on one stack stay apart
                key_hash=hash_key(plaintext), name=f"demo-key-{index:04d}",
                owner=f"team-{index % 17:02d}",
                allowed_models=self.rng.sample(self.models[:10], 3) if roll < 0.1 else [],
                max_budget_usd=Decimal(self.rng.choice((5, 20, 100, 500)))
                if 0.1 <= roll < 0.3 else None,
                expires_at=self.now + timedelta(days=self.rng.choice((-3, 30, 365)))
                if 0.3 <= roll < 0.4 else None,
            ), plaintext))
        return made

    def usage(self, key_ids: list[uuid.UUID], count: int) -> Iterator[UsageRecorded]:
        key_weights = zipf_cum_weights(len(key_ids))
        span = (self.now - self.window_start).total_seconds()
        rng, models = self.rng, self.models
        for index in range(count):
            key_id = rng.choices(key_ids, cum_weights=key_weights)[0]
            model = rng.choices(models, cum_weights=self.model_weights)[0]
            shape = rng.randrange(SHAPES)
            prompt, completion, cache_read = self.shapes[shape]
            status = "error" if rng.random() < 0.02 else "success"
            occurred_at = self.window_start + timedelta(seconds=rng.random() * span)
            cost = self._cost(model, shape, occurred_at)
            carries_cost = rng.random() < 0.5  # the other half is priced by the projector
            event = UsageRecorded(
                event_id=uuid.uuid4(),
                occurred_at=occurred_at, source=SOURCE, request_id=f"demo-{index}",
                api_key_id=key_id, model=model, provider=self.records[model].provider,
                prompt_tokens=prompt, completion_tokens=completion,
                cache_read_input_tokens=cache_read,
                reasoning_tokens=_reasoning(model, completion),
                latency_ms=rng.randrange(80, 9000), status=status,
                error_code="upstream_timeout" if status == "error" else None,
                cost_usd=cost if carries_cost else None,
            )
            self.expected.add(event, cost)
            yield event

    def poison(self, template: UsageRecorded, count: int) -> list[bytes]:
        """Messages a broken gateway might write: bad JSON, bad fields, unknown type/version."""
        body = json.loads(template.model_dump_json())
        kinds: list[Callable[[], bytes]] = [
            lambda: b'{"type": "usage.recorded", "truncated',
            lambda: json.dumps(dict(body, event_id=str(uuid.uuid4()), prompt_tokens=-1)).encode(),
            lambda: json.dumps(dict(body, event_id=str(uuid.uuid4()), type="usage.invented"))
            .encode(),
            lambda: json.dumps(dict(body, event_id=str(uuid.uuid4()), schema_version=7)).encode(),
            lambda: json.dumps(dict(body, event_id=str(uuid.uuid4()),
                                    occurred_at="2026-01-01T00:00:00")).encode(),
        ]
        return [kinds[i % len(kinds)]() for i in range(count)]


def _reasoning(model: str, completion: int) -> int:
    return completion // 3 if model.startswith(("o1", "o3", "o4")) else 0
