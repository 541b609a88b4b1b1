"""The invalidation message split into NOTIFY payloads: each fits, together they say it all.

Pure encoding: no server. PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (in the
server's encoding, UTF-8 here), so every payload is measured as the bytes it is sent as.
"""

from __future__ import annotations

import json
import uuid

import pytest

from ledger.invalidation import Invalidation, decode, encode, merge

NOTIFY_LIMIT_BYTES = 8000


def _fits(payload: str) -> bool:
    return len(payload.encode("utf-8")) < NOTIFY_LIMIT_BYTES


def _hashes(n: int) -> frozenset[str]:
    return frozenset(uuid.uuid4().hex * 2 for _ in range(n))  # 64 hex chars, like a key hash


def test_a_small_change_is_one_payload_that_decodes_to_itself() -> None:
    change = Invalidation(key_hashes=_hashes(3), key_ids=frozenset({str(uuid.uuid4())}),
                          models=frozenset({"gpt-4o"}), spend_key_ids=frozenset({"k1"}))
    payloads = encode(change)
    assert len(payloads) == 1
    assert decode(payloads[0]) == change


def test_flush_all_is_one_payload_whatever_else_it_names() -> None:
    payloads = encode(Invalidation(key_hashes=_hashes(500), flush_all=True))
    assert payloads == [json.dumps({"all": True})]
    assert decode(payloads[0]).flush_all


def test_a_large_change_is_split_into_payloads_that_each_fit() -> None:
    change = Invalidation(key_hashes=_hashes(400), key_ids=frozenset(
        str(uuid.uuid4()) for _ in range(300)), models=frozenset(f"model-{i}" for i in range(200)),
        spend_key_ids=frozenset(str(uuid.uuid4()) for _ in range(300)))
    payloads = encode(change)
    assert len(payloads) > 1
    assert all(_fits(p) for p in payloads)
    assert merge(decode(p) for p in payloads) == change  # nothing lost, nothing added
    assert sum(len(json.loads(p).get("h", [])) for p in payloads) == 400  # none twice


@pytest.mark.parametrize("char", ["é", "模", "🙂"])
def test_model_names_outside_ascii_still_fit(char: str) -> None:
    """json.dumps writes \\uXXXX escapes (6 or 12 bytes) for a character of 2 to 4 UTF-8
    bytes: a payload budgeted by UTF-8 length must not end up over the limit."""
    change = Invalidation(models=frozenset(f"{char * 40}-{i}" for i in range(300)))
    payloads = encode(change)
    assert all(_fits(p) for p in payloads), max(len(p.encode()) for p in payloads)
    assert merge(decode(p) for p in payloads) == change


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '{"h": "not-a-list"}', '{"all": 1}'])
def test_an_unreadable_payload_means_flush_everything(payload: str) -> None:
    assert decode(payload) == Invalidation(flush_all=True)
