"""Spool recovery: damage anywhere in the file loses only the damaged frames, which are
quarantined; only a frame cut off by a crash is a torn tail; a format-1 spool is migrated."""

from __future__ import annotations

import asyncio
import struct
import tempfile
import time
import zlib
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.events import parse_event
from ledger.producer import LedgerProducer
from ledger.producer import spool as spool_module
from ledger.producer.spool import Spool, SpoolRecord
from ledger.producer.spool_frames import (
    HEAD_SIZE,
    MAGIC,
    Frame,
    FrameScanner,
    encode_payload,
    encode_record,
    frame_payload,
)
from ops.devstack.ports import free_port
from tests.ledger.producer_helpers import consume, create_topics, unique_topics


def record(number: int) -> SpoolRecord:
    return SpoolRecord("t", b"k", f"value-{number}".encode(), [("type", b"x"), ("n", b"")])


# -- damage anywhere in the file: intact frames after it are kept, the damage quarantined ---

FRAMES = 1000


def same_size_record(number: int) -> SpoolRecord:
    """Records of equal length, so frame boundaries follow from the file size in any format."""
    return SpoolRecord("t", b"k", f"value-{number:04d}".encode(), [("type", b"x")])


def damaged_spool(directory: Path, damage: str, where: str) -> tuple[set[int], int, bytes]:
    """A spool of FRAMES records, then damage to one place in its file.

    Returns the numbers of the records that must survive, the bytes that must be
    quarantined (0 for a torn tail, which is dropped) and those bytes.
    """
    spool = Spool(directory)
    spool.append([same_size_record(n) for n in range(FRAMES)])
    spool.close()
    path = directory / spool_module.SPOOL_FILE
    data = bytearray(path.read_bytes())
    frame = len(data) // FRAMES
    victim = {"start": 0, "middle": FRAMES // 2, "end": FRAMES - 1}[where]
    start, end = victim * frame, (victim + 1) * frame
    survivors = set(range(FRAMES)) - {victim}
    garbage = b"garbage!" * 5
    if damage == "flipped payload byte":
        data[end - 3] ^= 0x40
        quarantined = bytes(data[start:end])
    elif damage == "flipped length byte":
        data[start + 5] ^= 0x01  # inside the length field of either format
        quarantined = bytes(data[start:end])
    elif damage == "bytes cut out":
        del data[start + 12 : start + 20]
        quarantined = bytes(data[start : end - 8])
    elif damage == "garbage inside a frame":
        data[start + 14 : start + 14] = garbage
        quarantined = bytes(data[start : end + len(garbage)])
    elif damage == "garbage between frames":
        data[start:start] = garbage
        quarantined = garbage
        survivors.add(victim)
    else:
        raise AssertionError(damage)
    path.write_bytes(bytes(data))
    return survivors, len(quarantined), quarantined


DAMAGE = ["flipped payload byte", "flipped length byte", "bytes cut out",
          "garbage inside a frame", "garbage between frames"]


def quarantine_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("quarantine-*.bin"))


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_loses_only_the_damaged_frame(
    tmp_path: Path, damage: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    survivors, quarantined_size, quarantined = damaged_spool(tmp_path, damage, where)
    with caplog.at_level("WARNING", logger="ledger.producer.spool"):
        reopened = Spool(tmp_path)
    records, _ = reopened.read(FRAMES + 1)
    assert records == [same_size_record(n) for n in sorted(survivors)]
    # The damaged bytes are kept for an operator, not dropped, and the log says so.
    [quarantine] = quarantine_files(tmp_path)
    assert quarantine.read_bytes() == quarantined
    message = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"{len(survivors)} frames kept" in message
    assert f"{quarantined_size} bytes quarantined" in message
    assert str(quarantine) in message
    assert "torn" not in message
    # Once repaired, the spool is whole: new records follow the survivors, and the next
    # open finds nothing to quarantine.
    reopened.append([same_size_record(FRAMES)])
    reopened.close()
    again = Spool(tmp_path)
    assert again.read(FRAMES + 2)[0] == [same_size_record(n) for n in sorted(survivors)] + [
        same_size_record(FRAMES)]
    again.close()
    assert len(quarantine_files(tmp_path)) == 1


def test_only_a_cut_off_last_frame_is_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    spool.append([same_size_record(n) for n in range(FRAMES)])
    spool.close()
    path = tmp_path / spool_module.SPOOL_FILE
    data = path.read_bytes()
    frame = len(data) // FRAMES
    path.write_bytes(data[: -frame // 2])  # a crash halfway through writing the last frame
    with caplog.at_level("WARNING", logger="ledger.producer.spool"):
        reopened = Spool(tmp_path)
    assert reopened.read(FRAMES)[0] == [same_size_record(n) for n in range(FRAMES - 1)]
    reopened.close()
    assert quarantine_files(tmp_path) == []
    assert f"torn tail of {frame - frame // 2} bytes" in caplog.text


def test_a_corrupt_last_frame_is_quarantined_not_taken_for_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(n) for n in range(3)])
    spool.close()
    path = tmp_path / spool_module.SPOOL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the CRC of the last frame no longer matches
    path.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert reopened.read(100)[0] == [record(0), record(1)]
    recovery = reopened.recovery
    assert (recovery.frames_kept, recovery.damaged_regions, recovery.torn_tail_bytes) == (2, 1, 0)
    assert recovery.quarantine_path is not None
    assert recovery.quarantine_path.read_bytes() == bytes(data[-recovery.quarantined_bytes:])
    reopened.close()


def format_1_frame(record: SpoolRecord) -> bytes:
    """A frame as the spool wrote it before the magic (format 1)."""
    payload = encode_payload(record)
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


def test_a_format_1_spool_is_migrated_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / spool_module.SPOOL_FILE
    old = b"".join(format_1_frame(record(n)) for n in range(5))
    path.write_bytes(old + format_1_frame(record(5))[:7])  # and a torn last frame
    with caplog.at_level("WARNING", logger="ledger.producer.spool"):
        spool = Spool(tmp_path)
    assert spool.read(10)[0] == [record(n) for n in range(5)]
    assert spool.recovery.migrated_records == 5
    assert "migrated 5 records from format 1" in caplog.text
    assert path.read_bytes().startswith(MAGIC)
    # Format 1 cannot tell a torn tail from damage, so the rest is kept, not dropped.
    assert spool.recovery.quarantine_path is not None
    assert spool.recovery.quarantine_path.read_bytes() == format_1_frame(record(5))[:7]
    spool.append([record(5)])
    spool.close()
    again = Spool(tmp_path)
    assert again.read(10)[0] == [record(n) for n in range(6)]
    assert not again.recovery.changed_anything
    again.close()


def test_oldest_age_follows_the_oldest_unsent_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.oldest_age_s() == 0
    spool.append([record(0)])
    path = tmp_path / spool_module.SPOOL_FILE
    spool.close()
    # Pretend record 0 was spooled an hour ago, then reopen: the age survives a restart.
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    path.write_bytes(encode_record(record(0), an_hour_ago))
    spool = Spool(tmp_path)
    spool.append([record(1)])
    assert 3599 < spool.oldest_age_s() < 3700
    _, first_end = spool.read(1)
    spool.commit(first_end)  # record 0 delivered: record 1, just spooled, is the oldest
    assert spool.oldest_age_s() < 60
    spool.commit(spool.read(1)[1])
    assert spool.oldest_age_s() == 0
    assert spool.pending_bytes == 0
    spool.close()


def test_damage_found_while_running_is_repaired_on_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([same_size_record(n) for n in range(10)])
    frame = spool.pending_bytes // 10
    # Something else writes into the open file (the lock only keeps other spools out).
    with (tmp_path / spool_module.SPOOL_FILE).open("r+b") as other:
        other.seek(3 * frame + frame // 2)
        other.write(b"\x00\x00")
    records, offset = spool.read(100)
    assert records == [same_size_record(n) for n in range(10) if n != 3]
    assert len(quarantine_files(tmp_path)) == 1
    spool.commit(offset)
    assert spool.is_empty()
    spool.close()


async def test_a_damaged_spool_resends_every_intact_event(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topics = unique_topics()
    await create_topics(kafka_bootstrap, topics)
    spool_dir = tmp_path / "spool"
    # Spool 300 events while no broker answers, then damage one in the middle of the file.
    async with LedgerProducer(f"127.0.0.1:{free_port()}", topics=topics, spool_dir=spool_dir,
                              close_timeout_s=0.2) as offline:
        events = [offline.events.usage(api_key_id=uuid4(), request_id=str(n), model="m",
                                       prompt_tokens=1, completion_tokens=1)
                  for n in range(300)]
        futures = [await offline.emit(event) for event in events]
        assert {d.status for d in await asyncio.gather(*futures)} == {"spooled"}
    path = spool_dir / spool_module.SPOOL_FILE
    with path.open("rb") as file:
        frames = [item for item in FrameScanner(file.fileno(), 0, path.stat().st_size)
                  if isinstance(item, Frame)]
    victim = frames[150]
    data = bytearray(path.read_bytes())
    data[victim.start + HEAD_SIZE + 40] ^= 0x01
    path.write_bytes(bytes(data))
    lost = parse_event(victim.record.value).event_id

    with caplog.at_level("WARNING", logger="ledger.producer"):
        async with LedgerProducer(kafka_bootstrap, topics=topics, spool_dir=spool_dir):
            pass  # start repairs and drains the spool; close waits for the drain
    assert "299 frames kept" in caplog.text
    messages = await consume(kafka_bootstrap, [topics.usage], 299)
    arrived = {parse_event(m.value).event_id for m in messages}
    assert arrived == {e.event_id for e in events} - {lost}


def test_a_frame_that_checks_out_but_does_not_decode_is_quarantined_on_read(
    tmp_path: Path,
) -> None:
    # Opening trusts the CRCs (it does not decode); reading decodes, and quarantines a
    # frame that does not, instead of failing on it for ever.
    good = [same_size_record(n) for n in range(3)]
    nonsense = frame_payload(b"\x09not a record", spooled_at_ms=0)
    (tmp_path / spool_module.SPOOL_FILE).write_bytes(
        encode_record(good[0], 0) + nonsense + encode_record(good[1], 0)
        + encode_record(good[2], 0))
    spool = Spool(tmp_path)
    assert not spool.recovery.changed_anything
    assert spool.read(10)[0] == good
    [quarantine] = quarantine_files(tmp_path)
    assert quarantine.read_bytes() == nonsense
    spool.close()


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=25),
    damage=st.sampled_from(["flip", "cut", "insert"]),
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    length=st.integers(min_value=1, max_value=64),
    noise=st.binary(min_size=1, max_size=64),
)
@pytest.mark.slow  # seconds of CPU: a long property search or passes over the whole catalog
def test_random_damage_keeps_every_untouched_frame_and_invents_nothing(
    sizes: list[int], damage: str, where: float, length: int, noise: bytes
) -> None:
    originals = [SpoolRecord("t", str(n).encode(), b"v" * size + str(n).encode(), [])
                 for n, size in enumerate(sizes)]
    with tempfile.TemporaryDirectory() as root:
        directory = Path(root)
        spool = Spool(directory)
        bounds = []
        for record in originals:  # one append each: frame boundaries from the file size
            start = spool.pending_bytes
            spool.append([record])
            bounds.append((start, spool.pending_bytes))
        spool.close()
        path = directory / spool_module.SPOOL_FILE
        data = bytearray(path.read_bytes())
        position = int(where * len(data))
        if damage == "flip":
            data[position] ^= 0x20
            touched = (position, position + 1)
        elif damage == "cut":
            del data[position : position + length]
            touched = (position, position + length)
        else:
            data[position:position] = noise
            touched = (position, position + 1)  # the frame split by the insertion, if any
        path.write_bytes(bytes(data))
        reopened = Spool(directory)
        kept = reopened.read(len(originals) + 1)[0]
        reopened.close()
    # Nothing invented or reordered: the survivors are originals, in their order.
    indexes = [originals.index(record) for record in kept]
    assert indexes == sorted(set(indexes))
    # Nothing lost that the damage did not touch.
    untouched = {n for n, (start, end) in enumerate(bounds)
                 if end <= touched[0] or start >= touched[1]
                 or (damage == "insert" and start == position)}
    assert untouched <= set(indexes)
