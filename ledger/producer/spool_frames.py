"""The spool's on-disk frames, and a scanner that survives damage anywhere in the file.

Frame (format 2), big-endian, appended one after another::

    magic  b"\\xffSPL"       4 bytes: 0xFF never occurs in UTF-8, so no JSON event carries it
    u32    payload length
    u64    spooled_at       milliseconds since the epoch: the age of a stalled spool
    u32    crc32(magic | length | spooled_at)
    u32    crc32(payload)
    payload = u8 record format(1) | u16 len topic | topic | i32 len key (-1 = none) | key
              | u32 len value | value | u16 header count | (u16 len name | name
              | u32 len value | value)*

The header has its own CRC so that a damaged length is recognised as damage rather than
trusted: a scanner that believed it would either skip intact frames or take the rest of the
file for a torn tail. After damage the scanner resynchronises on the next magic whose
header and payload CRCs both hold, so every intact frame after the damage is kept.

Format 1 (``u32 length | u32 crc32(payload) | payload``, no magic) is still read, only to
migrate an old spool on open.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import Literal, NamedTuple

from ledger.exceptions import SpoolError

MAGIC = b"\xffSPL"
RECORD_FORMAT = 1
# Frame header: magic, payload length, spooled_at (ms), header CRC, payload CRC.
_HEAD = struct.Struct(">4sIQII")
HEAD_SIZE = _HEAD.size
_HEAD_CHECKED = 16  # magic + length + spooled_at: what the header CRC covers
# A length above this is damage even if a CRC happens to match: no event comes near it.
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
_V1_HEAD = struct.Struct(">II")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")

READ_CHUNK_BYTES = 1024 * 1024


class SpoolRecord(NamedTuple):
    """One Kafka message as it will be (re)sent."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_payload(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    parts = [_U8.pack(RECORD_FORMAT), _U16.pack(len(topic)), topic]
    if record.key is None:
        parts.append(_I32.pack(-1))
    else:
        parts += [_I32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        encoded_name = name.encode()
        parts += [_U16.pack(len(encoded_name)), encoded_name, _U32.pack(len(value)), value]
    return b"".join(parts)


def frame_payload(payload: bytes, spooled_at_ms: int) -> bytes:
    checked = MAGIC + _U32.pack(len(payload)) + spooled_at_ms.to_bytes(8, "big")
    return checked + _U32.pack(zlib.crc32(checked)) + _U32.pack(zlib.crc32(payload)) + payload


def encode_record(record: SpoolRecord, spooled_at_ms: int) -> bytes:
    return frame_payload(encode_payload(record), spooled_at_ms)


def decode_payload(payload: bytes, start: int = 0, end: int | None = None) -> SpoolRecord:
    """The record in the CRC-valid payload ``payload[start:end]``; raises SpoolError if it
    is not well formed. Reads the buffer in place: no copy of the payload first."""
    try:
        return _decode(payload, start, len(payload) if end is None else end)
    except (struct.error, UnicodeDecodeError) as error:
        raise SpoolError(f"malformed spool record: {error}") from None


def _decode(data: bytes, start: int, end: int) -> SpoolRecord:
    (version,) = _U8.unpack_from(data, start)
    if version != RECORD_FORMAT:
        raise SpoolError(f"unknown spool record format {version}")
    position = start + 1
    (topic_length,) = _U16.unpack_from(data, position)
    position += 2
    topic = data[position : position + topic_length].decode()
    position += topic_length
    (key_length,) = _I32.unpack_from(data, position)
    position += 4
    key: bytes | None = None
    if key_length >= 0:
        key = data[position : position + key_length]
        position += key_length
    (value_length,) = _U32.unpack_from(data, position)
    position += 4
    value = data[position : position + value_length]
    position += value_length
    (header_count,) = _U16.unpack_from(data, position)
    position += 2
    headers: list[tuple[str, bytes]] = []
    for _ in range(header_count):
        (name_length,) = _U16.unpack_from(data, position)
        position += 2
        name = data[position : position + name_length].decode()
        position += name_length
        (header_length,) = _U32.unpack_from(data, position)
        position += 4
        headers.append((name, data[position : position + header_length]))
        position += header_length
    if position != end:
        raise SpoolError("spool record length does not match its fields")
    return SpoolRecord(topic, key, value, headers)


class Frame(NamedTuple):
    """A whole, CRC-valid frame at [start, end) of the file (``record`` is None when the
    scanner was asked not to decode)."""

    start: int
    end: int
    spooled_at_ms: int
    record: SpoolRecord | None


class Damage(NamedTuple):
    """Bytes at [start, end) that are not part of any valid frame."""

    start: int
    end: int


class TornTail(NamedTuple):
    """A frame cut short by a crash during its append: from ``start`` to the end of file."""

    start: int
    end: int


ScanItem = Frame | Damage | TornTail
_Check = Literal["ok", "bad", "bad_payload", "runs_past_end", "short"]


class FrameScanner:
    """Reads frames of ``fd`` in [start, end) through a window, resynchronising after damage.

    Yields ``Frame`` for every valid frame in order, ``Damage`` for each damaged region and
    at most one ``TornTail``, always last. Only a valid header whose frame runs past the end
    of the file (or a few bytes that begin like one) with no valid frame after it is a torn
    tail: a crash during the append that wrote it. Anything else that does not check out is
    damage, which the caller quarantines rather than drops.
    """

    def __init__(self, fd: int, start: int, end: int, *, decode: bool = True) -> None:
        self._fd = fd
        self._start = start
        self._end = end
        self._decode = decode
        self._base = start
        self._buffer = b""

    def _locate(self, position: int, size: int) -> int | None:
        """The offset in the buffer of file bytes [position, position + size), reading
        them if needed; None past the scanned end."""
        if position + size > self._end:
            return None
        offset = position - self._base
        if offset < 0 or offset + size > len(self._buffer):
            wanted = min(max(size, READ_CHUNK_BYTES), self._end - position)
            self._buffer = os.pread(self._fd, wanted, position)
            self._base = position
            offset = 0
            if len(self._buffer) < size:
                return None  # the file shrank under us: nothing more to read
        return offset

    def _check(self, position: int) -> tuple[_Check, int, int, SpoolRecord | None]:
        """What is at ``position``: (verdict, frame end if the length is trusted, time, rec)."""
        head = self._locate(position, HEAD_SIZE)
        if head is None:
            return "short", 0, 0, None
        buffer = self._buffer
        magic, length, spooled_at, head_crc, payload_crc = _HEAD.unpack_from(buffer, head)
        if magic != MAGIC or zlib.crc32(buffer[head : head + _HEAD_CHECKED]) != head_crc:
            return "bad", 0, 0, None
        if length > MAX_PAYLOAD_BYTES:
            return "bad", 0, 0, None
        end = position + HEAD_SIZE + length
        if end > self._end:
            return "runs_past_end", end, 0, None
        start = self._locate(position + HEAD_SIZE, length)
        if start is None:
            return "bad_payload", end, 0, None
        buffer = self._buffer  # _locate may have read a new window
        if zlib.crc32(memoryview(buffer)[start : start + length]) != payload_crc:
            return "bad_payload", end, 0, None
        if not self._decode:
            return "ok", end, spooled_at, None
        try:
            record = decode_payload(buffer, start, start + length)
        except SpoolError:
            return "bad_payload", end, 0, None
        return "ok", end, spooled_at, record

    def _next_valid(self, position: int) -> int | None:
        """The start of the first valid frame after ``position``, if any."""
        search = position + 1
        while search < self._end:
            chunk_end = min(search + READ_CHUNK_BYTES, self._end)
            chunk = os.pread(self._fd, chunk_end - search, search)
            found = chunk.find(MAGIC)
            while found >= 0:
                if self._check(search + found)[0] == "ok":
                    return search + found
                found = chunk.find(MAGIC, found + 1)
            if chunk_end >= self._end or not chunk:
                return None
            search = chunk_end - (len(MAGIC) - 1)  # a magic split across two chunks
        return None

    def __iter__(self) -> Iterator[ScanItem]:
        position = self._start
        while position < self._end:
            verdict, frame_end, spooled_at, record = self._check(position)
            if verdict == "ok":
                yield Frame(position, frame_end, spooled_at, record)
                position = frame_end
                continue
            if verdict == "bad_payload" and (
                frame_end == self._end or self._check(frame_end)[0] == "ok"
            ):
                # The header vouches for the length: exactly this one frame is damaged.
                yield Damage(position, frame_end)
                position = frame_end
                continue
            following = self._next_valid(position)
            if following is not None:
                yield Damage(position, following)
                position = following
            elif verdict == "runs_past_end" or (
                verdict == "short" and self._is_head_prefix(position)
            ):
                yield TornTail(position, self._end)
                return
            else:
                yield Damage(position, self._end)
                return

    def _is_head_prefix(self, position: int) -> bool:
        rest = os.pread(self._fd, self._end - position, position)
        return bool(MAGIC.startswith(rest[: len(MAGIC)]))


def read_spooled_at(fd: int, position: int) -> int | None:
    """The spooled_at of the frame at ``position`` (trusted only if its header CRC holds)."""
    head = os.pread(fd, HEAD_SIZE, position)
    if len(head) < HEAD_SIZE:
        return None
    magic, _, spooled_at, head_crc, _ = _HEAD.unpack(head)
    if magic != MAGIC or zlib.crc32(head[:_HEAD_CHECKED]) != head_crc:
        return None
    return int(spooled_at)


def looks_like_format_1(fd: int, size: int) -> bool:
    """A spool written before format 2: its first frame is a valid format-1 frame."""
    head = os.pread(fd, _V1_HEAD.size, 0)
    if len(head) < _V1_HEAD.size or head.startswith(MAGIC):
        return False
    length, crc = _V1_HEAD.unpack(head)
    if _V1_HEAD.size + length > size:
        return False
    return zlib.crc32(os.pread(fd, length, _V1_HEAD.size)) == int(crc)


def scan_format_1(fd: int, size: int) -> Iterator[tuple[SpoolRecord, int]]:
    """(record, end offset) of each format-1 frame up to the first that does not check out.

    Format 1 has no marker to resynchronise on, so what follows a bad frame is left to the
    caller (which quarantines it).
    """
    position = 0
    while position + _V1_HEAD.size <= size:
        length, crc = _V1_HEAD.unpack(os.pread(fd, _V1_HEAD.size, position))
        end = position + _V1_HEAD.size + length
        if end > size:
            return
        payload = os.pread(fd, length, position + _V1_HEAD.size)
        if zlib.crc32(payload) != crc:
            return
        try:
            record = decode_payload(payload)
        except SpoolError:
            return
        yield record, end
        position = end
