"""A gateway process for the budget tests: ``python -m tests.readmodels.budget_gateway``.

``spend PLAINTEXT CONCURRENCY SEED``: CONCURRENCY tasks each reserve a random estimate,
emit the usage (actual cost at most the estimate) with the hold id, and go on until
refused three times in a row; prints one JSON line of what it did.
``hold PLAINTEXT ESTIMATE``: takes one hold, prints ``held``, then waits to be killed.
Settings (DATABASE_URL, Kafka, topics, BUDGET_HOLD_TTL) come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from decimal import Decimal

from ledger.producer import LedgerProducer
from ledger.settings import load_settings
from readmodels import ReadModels, Reason

ESTIMATES = [Decimal("0.01"), Decimal("0.02"), Decimal("0.03"), Decimal("0.05")]
MAX_ESTIMATE = max(ESTIMATES)


async def spend(plaintext: str, concurrency: int, seed: int) -> dict[str, object]:
    settings = load_settings()
    rng = random.Random(seed)
    totals = {"allowed": 0, "refused": 0, "estimated": Decimal(0), "actual": Decimal(0)}
    async with ReadModels.open(settings) as rm, LedgerProducer.from_settings(
            settings, source=f"budget-gateway-{seed}") as producer:
        decision = await rm.keys.authorize(plaintext, "gpt-4o")
        assert decision.key is not None, decision
        key_id = decision.key.id

        async def worker(n: int) -> None:
            refusals = 0
            while refusals < 3:
                estimate = rng.choice(ESTIMATES)
                decision = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
                if not decision.allowed:
                    assert decision.reason is Reason.OVER_BUDGET, decision
                    totals["refused"] += 1  # type: ignore[operator]
                    refusals += 1
                    await asyncio.sleep(0.3)  # let the projector settle what is in flight
                    continue
                refusals = 0
                actual = estimate if rng.random() < 0.75 else estimate / 2
                await asyncio.sleep(rng.random() / 100)  # the call to the provider
                await producer.emit_and_wait(producer.events.usage(
                    api_key_id=key_id, request_id=f"r-{seed}-{n}-{totals['allowed']}",
                    model="gpt-4o", prompt_tokens=10, completion_tokens=5, cost_usd=actual,
                    hold_id=decision.hold_id))
                totals["allowed"] += 1  # type: ignore[operator]
                totals["estimated"] += estimate  # type: ignore[operator]
                totals["actual"] += actual  # type: ignore[operator]

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {name: str(value) for name, value in totals.items()}


async def hold(plaintext: str, estimate: Decimal) -> None:
    async with ReadModels.open(load_settings()) as rm:
        decision = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
        print("held" if decision.allowed else f"refused {decision}", flush=True)
        await asyncio.sleep(3600)


def main() -> None:
    mode, plaintext, *rest = sys.argv[1:]
    if mode == "spend":
        print(json.dumps(asyncio.run(spend(plaintext, int(rest[0]), int(rest[1])))), flush=True)
    else:
        asyncio.run(hold(plaintext, Decimal(rest[0])))


if __name__ == "__main__":
    main()
