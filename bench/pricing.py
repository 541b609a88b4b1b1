"""Benchmark of the projector's catalog pricing, per event (a script, not part of make bench).

    .venv/bin/python bench/pricing.py [--events 20000] [--rounds 7]

No servers: prices the same events, in memory, two ways in one run, the rounds interleaved:

* ``price()``: what the projector did per event before plans were cached (a ``Usage``, then
  ``ledger.pricing.price``, the defining function, with its breakdown);
* ``projector``: what it does now (``CatalogPricer._price``: counts checked, the plan of the
  event's record, conditions and prompt bucket from a ``PlanCache``, the arithmetic).

Two workloads: ``demo``, the events of ``ledger demo`` (its 50 models, token shapes and
three months of occurred_at; every event without a cost), and ``mixed``, the same events
with a random service tier and region each. Prints CPU microseconds per event (median of
the rounds) and checks both ways give the same cost, digit for digit, for every event.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

# The repository root before bench/, whose readmodels.py would shadow the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from ledger.catalog import ModelRecord, load_snapshot
from ledger.events import UsageRecorded
from ledger.fields import DATA_RESIDENCIES, SERVICE_TIERS
from ops.demo.traffic import TrafficGenerator
from projections.pricer import CatalogPricer
from tests.ledger.pricing_cases import reference_cost

Priced = tuple[Decimal | None, str]


def by_price(record: ModelRecord, event: UsageRecorded) -> Priced:
    """The way before plans: a Usage, then price() (the test of the pricer's reference)."""
    return reference_cost(record, event)


def workloads(count: int) -> tuple[dict[str, ModelRecord], dict[str, list[UsageRecorded]]]:
    generator = TrafficGenerator(15, load_snapshot())
    keys = [uuid.uuid4() for _ in range(100)]
    demo = [e.model_copy(update={"cost_usd": None}) for e in generator.usage(keys, count)]
    rng = random.Random(15)
    mixed = [e.model_copy(update={
        "service_tier": rng.choice((None, *SERVICE_TIERS)),
        "data_residency": rng.choice((None, *DATA_RESIDENCIES)),
        "vertex_location": rng.choice((None, "global", "us-east5")),
        "inference_geo": rng.choice((None, "us", "global")),
    }) for e in demo]
    return generator.records, {"demo": demo, "mixed": mixed}


def timed(
    pricing: Callable[[ModelRecord, UsageRecorded], Priced],
    records: dict[str, ModelRecord], events: Sequence[UsageRecorded],
) -> tuple[float, list[Priced]]:
    start = time.process_time()
    result = [pricing(records[e.model], e) for e in events]
    return (time.process_time() - start) / len(events) * 1e6, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    records, loads = workloads(args.events)
    print(f"{args.events} events per workload, {args.rounds} rounds, CPU us/event (median)")
    print("| workload | price() | projector | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, events in loads.items():
        pricer = CatalogPricer()  # a fresh cache: its misses are in the first round
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.rounds):
            spent, expected = timed(by_price, records, events)
            old.append(spent)
            spent, got = timed(pricer._price, records, events)
            new.append(spent)
            # repr: Decimal("0.0075") == Decimal("0.00750"), but the digits must match too.
            if [repr(p) for p in expected] != [repr(p) for p in got]:
                raise SystemExit(f"{name}: the two ways priced some event differently")
        a, b = statistics.median(old), statistics.median(new)
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
