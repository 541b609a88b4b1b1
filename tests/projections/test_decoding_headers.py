"""The projector reads a message's value only: its key and headers are informational.

docs/events.md says so ("The message"): a header that disagrees with the body, a missing
header or another key never turns a valid event into a dead letter, and a header never
rescues an invalid body. These are real aiokafka records through the real decoder.
"""

from __future__ import annotations

import uuid

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ledger.events import dump_event, event_headers
from projections.decoding import decode_batch
from tests.projections.helpers import usage_event

TOPIC = "ledger.usage"


def _record(offset: int, value: bytes, key: bytes | None,
            headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 0, offset, 1_700_000_000_000, 0, key, value, None,
                          len(key or b""), len(value), headers)


def test_headers_and_key_do_not_decide_how_a_value_is_read() -> None:
    event = usage_event(uuid.uuid4())
    body = dump_event(event)
    truthful = (str(event.api_key_id).encode(), event_headers(event))
    cases = [
        truthful,
        (None, []),  # no key, no headers
        (b"someone-else", [("type", b"api_key.revoked"), ("schema_version", b"9")]),
        (truthful[0], [("type", b"usage.recorded"), ("type", b"model.retired")]),
        (truthful[0], [("schema_version", b"not a number")]),
    ]
    records = [_record(offset, body, key, headers)
               for offset, (key, headers) in enumerate(cases)]
    records.append(_record(len(records), body.replace(b'"prompt_tokens":', b'"prompt_tokens":-'),
                           *truthful))
    partition = TopicPartition(TOPIC, 0)
    decoded = decode_batch("usage", 1, {partition: 0}, {partition: records})
    assert [envelope.event for envelope in decoded.envelopes] == [event] * len(cases)
    # Matching headers and key do not make an invalid value valid.
    assert [(f.message.offset, f.kind) for f in decoded.poison] == [(len(cases),
                                                                    "invalid_event")]
