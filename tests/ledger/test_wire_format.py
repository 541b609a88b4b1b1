"""docs/events.md is the contract for gateways in other languages: test it as written."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from ledger.events import CURRENT_VERSIONS, EVENT_TYPES, Topics, parse_event, topic_for
from ledger.schema import event_json_schema
from tests.ledger.producer_helpers import consume, create_topics, unique_topics

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


@dataclass
class DocExample:
    marker: str
    topic: str
    key: str
    headers: list[tuple[str, str]]
    body: dict[str, Any]
    text: str


def doc_examples() -> list[DocExample]:
    """Every "<!-- example -->" section: its table (topic, key, headers) and JSON block."""
    text = DOC.read_text(encoding="utf-8")
    examples = []
    for match in re.finditer(r"<!-- (example(?: v\d+)?) -->\n(.*?)```json\n(.*?)```", text, re.S):
        marker, table, body = match.groups()
        rows = dict(re.findall(r"^\| (topic|key) \| `([^`]*)` \|$", table, re.M))
        headers = re.findall(r"^\| header `([^`]+)` \| `([^`]*)` \|$", table, re.M)
        examples.append(
            DocExample(marker, rows["topic"], rows["key"], headers, json.loads(body), body)
        )
    return examples


EXAMPLES = doc_examples()
CURRENT = [example for example in EXAMPLES if example.marker == "example"]
OLD = [example for example in EXAMPLES if example.marker != "example"]


def test_every_event_type_is_documented_once() -> None:
    assert sorted(example.body["type"] for example in CURRENT) == sorted(EVENT_TYPES)
    assert OLD, "the v1 -> v2 upcasting example is missing"


# jsonschema is imported where used: with its format checkers it takes seconds to import,
# which every run of the fast tier (`make fast`, these deselected) would otherwise pay.
@pytest.mark.slow
@pytest.mark.parametrize("example", CURRENT, ids=lambda example: example.body["type"])
def test_json_schema_accepts_documented_example(example: DocExample) -> None:
    import jsonschema

    jsonschema.validate(example.body, event_json_schema())


@pytest.mark.slow
def test_json_schema_rejects_what_parse_event_rejects() -> None:
    import jsonschema

    schema = event_json_schema()
    body = dict(CURRENT[0].body)
    for bad in ({"prompt_tokens": -1}, {"status": "partial"}, {"request_id": ""}, {"x": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**body, **bad}, schema)


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=lambda example: f"{example.marker}-{example.body['type']}"
)
def test_documented_example_is_self_consistent(example: DocExample) -> None:
    event = parse_event(example.text.encode())
    assert event.type == example.body["type"]
    assert dict(example.headers) == {
        "type": example.body["type"],
        "schema_version": str(example.body["schema_version"]),
    }
    assert event.partition_key() == example.key
    assert topic_for(event, Topics()) == example.topic
    if example.marker == "example":
        assert example.body["schema_version"] == CURRENT_VERSIONS[event.type]


async def test_plain_aiokafka_message_from_the_docs_is_accepted(kafka_bootstrap: str) -> None:
    """A gateway without this library: raw bytes, key and headers exactly as documented."""
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    sent = 0
    try:
        for example in EXAMPLES:
            topic = getattr(topics, example.topic.removeprefix("ledger."))
            await producer.send_and_wait(
                topic,
                value=json.dumps(example.body, separators=(",", ":")).encode("utf-8"),
                key=example.key.encode("utf-8"),
                headers=[(name, value.encode("utf-8")) for name, value in example.headers],
            )
            sent += 1
    finally:
        await producer.stop()
    messages = await consume(
        kafka_bootstrap, [topics.usage, topics.keys, topics.catalog, topics.alerts], sent)
    assert len(messages) == sent
    decoded = {str(parse_event(message.value).event_id) for message in messages}
    assert decoded == {example.body["event_id"] for example in EXAMPLES}
