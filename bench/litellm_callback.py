"""What the LiteLLM integration adds per call (a script, not a test).

    .venv/bin/python bench/litellm_callback.py [--calls N] [--auth-calls N]

Starts an embedded broker and PostgreSQL in a temporary directory (or uses
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set) and measures, in one process:

1. the callback: ``async_log_success_event`` as LiteLLM calls it, with the kwargs real
   ``litellm.acompletion`` / ``aembedding`` calls (``mock_response``, offline) produced: the
   time on LiteLLM's path (step 1 of integrations/litellm/callback.py, p50/p99,
   microseconds); the process's CPU per call over the same run (every step, the producer's
   sending and the loop); and each step timed on its own;
2. a whole ``litellm.acompletion`` with ``mock_response``: without callbacks, with one that
   does nothing (LiteLLM builds its logging payload only when a callback is registered) and
   with the ledger's (LiteLLM runs callbacks in a task of its own; end to end, noise
   included);
3. the auth hook with a warm cache: ``LedgerAuth(request, key)`` on requests whose body the
   proxy has already read, as when LiteLLM calls custom_auth (p50/p99, microseconds), for
   keys without a budget (``auth_warm``: no estimate is made) and then for keys with one
   (``auth_warm.with_budget``: the request's estimate is computed and held; the keys at
   spread points of their budget leases, as in a running proxy, and
   ``with_budget_leases_in_step`` with every key's lease running low at once: see
   ``bench_auth``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: the bundled map
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import litellm
from litellm.integrations.custom_logger import CustomLogger

from bench.producer import broker_for
from bench.scratch_db import migrated_database
from integrations.litellm import HOLD_FIELD, LedgerAuth, LedgerCallback
from integrations.litellm.mapping import finish_fields, read_call
from ledger.events import UsageRecorded
from ledger.keys import generate_key, hash_key
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ledger.topics import TopicSpec, ensure_topics
from readmodels.reservations import LEASE_REQUESTS
from tests.integrations.litellm_calls import CALLS, Capture, chat, proxy_request, registered, settle


def calibration() -> float:
    """``sum(range(1000))`` in microseconds (best of 5): how fast this machine is right now,
    to compare figures taken at different times or under other load."""
    return round(min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6, 2)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def micro(values: list[float]) -> dict[str, float]:
    return {"p50_us": round(pct(values, 0.5) * 1e6, 2), "p99_us": round(pct(values, 0.99) * 1e6, 2),
            "mean_us": round(statistics.fmean(values) * 1e6, 2), "n": len(values)}


@contextmanager
def broker() -> Iterator[str]:
    with broker_for(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        yield bootstrap


async def captured_calls() -> list[tuple[dict[str, Any], Any]]:
    """One finished call of each kind, as LiteLLM hands it to its callbacks."""
    capture = Capture()
    with registered(capture):
        for call in CALLS.values():
            await call()
        await settle(capture, len(CALLS))
    return capture.calls


async def bench_callback(settings: Settings, calls: int) -> dict[str, Any]:
    samples = await captured_calls()
    callback = LedgerCallback(settings, source="bench-litellm")
    await callback._start()  # the first call's producer start is not on the measured path
    producer = callback.producer
    assert producer is not None
    timings: list[float] = []
    cpu_started = time.process_time()
    try:
        for index in range(calls):
            kwargs, response = samples[index % len(samples)]
            started = time.perf_counter()
            await callback.async_log_success_event(kwargs, response, None, None)
            timings.append(time.perf_counter() - started)
            # Between calls a proxy's loop runs its other tasks: the callback's own (steps 2
            # and 3) and the producer's among them, outside the measured path.
            await asyncio.sleep(0)
            if index % 2500 == 2499:
                await callback.flush()  # as the broker keeps up in a real proxy
        await callback.flush()
        cpu = time.process_time() - cpu_started
        steps = await _steps(callback, producer, samples, calls)
    finally:
        await callback.close()
    if callback.errors:
        raise SystemExit(f"the callback failed {callback.errors} times")
    # The process's CPU over the run, per call: the path, steps 2 and 3, the producer's
    # sending to the broker (the broker runs in a process of its own) and the loop.
    return {**micro(timings), "cpu_per_call_us": round(cpu / calls * 1e6, 2), **steps}


async def _steps(callback: LedgerCallback, producer: LedgerProducer,
                 samples: list[tuple[dict[str, Any], Any]], calls: int) -> dict[str, Any]:
    """Each of the callback's steps on its own, timed call by call."""
    reading: list[float] = []
    validating: list[float] = []
    emitting: list[float] = []
    for index in range(calls):
        kwargs, response = samples[index % len(samples)]
        started = time.perf_counter()
        fields = read_call(kwargs, response)
        fields["source"] = callback.source
        read = time.perf_counter()
        event = UsageRecorded.__pydantic_validator__.validate_python(  # as step 2
            finish_fields(fields))
        validated = time.perf_counter()
        await producer.emit(event)
        emitting.append(time.perf_counter() - validated)
        validating.append(validated - read)
        reading.append(read - started)
        await asyncio.sleep(0)
        if index % 2500 == 2499:
            await producer.flush()
    await producer.flush()
    return {"step_1_read": micro(reading), "step_2_validate": micro(validating),
            "step_3_emit": micro(emitting)}


class NoOp(CustomLogger):
    """A callback that does nothing: what LiteLLM's own logging costs once one is registered."""

    async def async_log_success_event(self, kwargs: Any, response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        return None


async def bench_acompletion(settings: Settings, rounds: int) -> dict[str, Any]:
    """A whole acompletion: without callbacks, with a callback that does nothing, with the
    ledger's. Interleaved round by round so that drift in the machine's load hits all three."""
    callback = LedgerCallback(settings, source="bench-litellm")
    await callback._start()
    variants: dict[str, tuple[CustomLogger, ...]] = {
        "no_callback": (), "noop_callback": (NoOp(),), "ledger_callback": (callback,)}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    await chat()  # warm LiteLLM's own caches
    try:
        for _ in range(rounds):
            for name, callbacks in variants.items():
                with registered(*callbacks):
                    for _ in range(10):
                        started = time.perf_counter()
                        await chat()
                        timings[name].append(time.perf_counter() - started)
                    await asyncio.sleep(0.05)  # let the callbacks' tasks finish in the round
    finally:
        await callback.close()
    return {**{name: micro(found) for name, found in timings.items()},
            "recorded": callback.emitted}


# The headers the OpenAI Python SDK sends with a chat completion: the requests the hook is
# measured on are those a proxy receives.
SDK_HEADERS = [
    (b"host", b"localhost:4000"), (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"), (b"accept", b"application/json"),
    (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 1.99.9"),
    (b"x-stainless-lang", b"python"), (b"x-stainless-package-version", b"1.99.9"),
    (b"x-stainless-os", b"Linux"), (b"x-stainless-arch", b"x64"),
    (b"x-stainless-runtime", b"CPython"), (b"x-stainless-runtime-version", b"3.11.7"),
    (b"authorization", b"Bearer sk-led-redacted"), (b"x-stainless-async", b"async:asyncio"),
    (b"x-stainless-retry-count", b"0"), (b"x-stainless-read-timeout", b"600"),
]


async def bench_auth(dsn: str, calls: int, keys: int = 100) -> dict[str, Any]:
    """The hook on keys without a budget (no estimate is made for them), then on keys with one
    (the estimate is made and held), each with a warm cache.

    A key with a budget holds out of a lease of LEASE_REQUESTS estimates and leases the next
    in the background when a quarter is left (readmodels/reservations.py). In a proxy that
    has been running, its keys are at every point of their leases, so those background
    round trips are spread over time: ``with_budget`` is measured so, each key warmed up
    through its own share of its first lease. ``with_budget_leases_in_step`` is the same
    measure on keys that all start a fresh lease together and are called in turn, so every
    key's next lease is taken in the same hundredth of the calls: a proxy's first minutes
    under even traffic, shown beside it.
    """
    from litellm.proxy.common_utils.http_parsing_utils import _read_request_body

    free = [generate_key() for _ in range(keys)]
    budgeted = {shape: [generate_key() for _ in range(keys)] for shape in ("spread", "in_step")}
    budgeted_ids = {shape: [uuid.uuid4() for _ in range(keys)] for shape in budgeted}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO api_keys (id, key_hash, name, allowed_models, created_at, updated_at) "
            "VALUES ($1, $2, 'bench', $3, now(), now())",
            [(uuid.uuid4(), hash_key(k), ["gpt-4o"]) for k in free]
            + [(i, hash_key(k), ["gpt-4o"]) for shape in budgeted
               for i, k in zip(budgeted_ids[shape], budgeted[shape], strict=True)])
        await conn.executemany(  # limits no bench reaches: every call is held, none refused
            "INSERT INTO budgets (scope, limit_usd, period, timezone, alert_thresholds, "
            "updated_at) VALUES ($1, 1000000, 'month', 'UTC', '{50,80,100}', now())",
            [(f"key:{i}",) for ids in budgeted_ids.values() for i in ids])
        await conn.execute(
            "INSERT INTO models (name, provider, mode, input_cost_per_token, "
            "output_cost_per_token, raw, valid_from) "
            "VALUES ('gpt-4o', 'openai', 'chat', 0.0000025, 0.00001, '{}', now())")
    finally:
        await conn.close()
    hook = LedgerAuth(Settings(database_url=dsn))
    requests = []
    for index in range(keys):  # the proxy reads (and caches) the body before custom_auth
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 100 + index}
        request = proxy_request(body, headers=[
            *SDK_HEADERS, (b"content-length", str(len(json.dumps(body).encode())).encode())])
        await _read_request_body(request=request)
        requests.append(request)

    async def timed_calls(called: list[str], *, held: bool) -> list[float]:
        timings = []
        for index in range(calls):
            request, key = requests[index % keys], called[index % keys]
            started = time.perf_counter()
            granted = await hook(request, key)
            timings.append(time.perf_counter() - started)
            if held and HOLD_FIELD not in granted.metadata:
                raise SystemExit("a budgeted call was not held")
            # Freed here, outside the measured call: a proxy frees it when the request ends,
            # not in the next request's custom_auth (a 120-field object: about 3 us).
            del granted
            if held:
                # Between requests a proxy's loop runs its other tasks, the reservations'
                # lease prefetch among them (outside the measured calls, as in a proxy).
                await asyncio.sleep(0)
        return timings

    try:
        for index, request in enumerate(requests):  # warm up: caches loaded, leases taken
            await hook(request, free[index])
            await hook(request, budgeted["spread"][index])
            await hook(request, budgeted["in_step"][index])
        # Key k of the spread ones goes k/keys of the way to its prefetch point (three
        # quarters of its lease) before the measure.
        prefetch_at = LEASE_REQUESTS * 3 // 4
        for index, request in enumerate(requests):
            for _ in range(index * prefetch_at // keys):
                await hook(request, budgeted["spread"][index])
                await asyncio.sleep(0)
        timings = await timed_calls(free, held=False)
        spread = await timed_calls(budgeted["spread"], held=True)
        in_step = await timed_calls(budgeted["in_step"], held=True)
    finally:
        await hook.close()
    return {**micro(timings), "with_budget": micro(spread),
            "with_budget_leases_in_step": micro(in_step)}


@asynccontextmanager
async def stack() -> AsyncIterator[Settings]:
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-litellm-") as root:
        topic = f"bench-litellm-{uuid.uuid4().hex[:8]}"
        await ensure_topics(bootstrap, [TopicSpec(topic, 12)])
        yield Settings(kafka_bootstrap_servers=bootstrap, topic_usage=topic,
                       spool_dir=Path(root) / "spool")


async def main(calls: int, auth_calls: int, rounds: int) -> None:
    litellm.suppress_debug_info = True
    async with stack() as settings:
        callback = await bench_callback(settings, calls)
        completion = await bench_acompletion(settings, rounds)
    async with migrated_database("bench-litellm-pg-") as dsn:
        auth = await bench_auth(dsn, auth_calls)
    report = {"litellm": version("litellm"), "calibration_sum_range_1000_us": calibration(),
              "load_average": os.getloadavg(), "callback": callback,
              "acompletion": completion, "auth_warm": auth}
    print(json.dumps(report, indent=2))
    print(f"callback on LiteLLM's path: p50 {callback['p50_us']} us, "
          f"p99 {callback['p99_us']} us (target p50 <= 50 us); the process's CPU per call, "
          f"every step and the sending included: {callback['cpu_per_call_us']} us")
    print(f"auth hook, warm cache: p50 {auth['p50_us']} us, p99 {auth['p99_us']} us "
          f"(target p99 <= 100 us); keys with a budget: p50 {auth['with_budget']['p50_us']} "
          f"us, p99 {auth['with_budget']['p99_us']} us (with every key's lease running low "
          f"at once: p50 {auth['with_budget_leases_in_step']['p50_us']} us, p99 "
          f"{auth['with_budget_leases_in_step']['p99_us']} us)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--auth-calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=30,
                        help="acompletion rounds (10 calls per variant each)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.auth_calls, args.rounds))
