"""Durable local spool: records that could not reach Kafka wait here, in order, on disk.

File layout (``<spool_dir>/spool.log``), one frame per record, appended only::

    u32 payload_length | u32 crc32(payload) | payload
    payload = u8 format(1) | u16 len topic | i32 len key (-1 = none) | key
              | u32 len value | u16 header count | (u16 len name | u32 len value)*

Frames are big-endian. A crash can leave a torn last frame (short or CRC mismatch); opening
the spool truncates the file back to the last whole frame, which is safe because the
producer only reports a record as spooled after the fsync that covered it.

Reading never moves records: ``read`` returns frames from the committed offset and
``commit`` advances it after Kafka acknowledged them. When everything is committed the file
is truncated to zero; when a long backlog is half resent it is compacted (the unsent tail
copied to a new file that atomically replaces the old one). The committed offset is kept
in memory only, so a crash during a resend sends the resent part again: duplicates are
allowed (the projector deduplicates by event_id), loss is not.

All methods are blocking file I/O (the producer calls them through ``asyncio.to_thread``)
and serialized by an internal lock: a worker thread left running by a cancelled task can
never interleave its write with the next one.
"""

from __future__ import annotations

import fcntl
import functools
import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, NamedTuple, ParamSpec, TypeVar

from ledger.exceptions import SpoolError, SpoolLockedError

SPOOL_FILE = "spool.log"
# Records the broker refuses for good (e.g. too large) are parked here, not retried forever.
REJECTED_DIR = "rejected"
LOCK_FILE = "spool.lock"
FORMAT_VERSION = 1

_FRAME_HEAD = struct.Struct(">II")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")

# Compact once this many bytes at the head of the file are already resent, and they are
# more than half of it: rewriting a small tail is cheap, re-reading a large dead head is not.
COMPACT_THRESHOLD_BYTES = 16 * 1024 * 1024
_READ_CHUNK_BYTES = 1024 * 1024


class SpoolRecord(NamedTuple):
    """One Kafka message as it will be (re)sent."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_record(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    parts = [_U8.pack(FORMAT_VERSION), _U16.pack(len(topic)), topic]
    if record.key is None:
        parts.append(_I32.pack(-1))
    else:
        parts += [_I32.pack(len(record.key)), record.key]
    parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
    for name, value in record.headers:
        encoded_name = name.encode()
        parts += [_U16.pack(len(encoded_name)), encoded_name, _U32.pack(len(value)), value]
    payload = b"".join(parts)
    return _FRAME_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpoolRecord:
    view = memoryview(payload)
    (version,) = _U8.unpack_from(view, 0)
    if version != FORMAT_VERSION:
        raise SpoolError(f"unknown spool record format {version}")
    position = 1
    (topic_length,) = _U16.unpack_from(view, position)
    position += 2
    topic = bytes(view[position : position + topic_length]).decode()
    position += topic_length
    (key_length,) = _I32.unpack_from(view, position)
    position += 4
    key: bytes | None = None
    if key_length >= 0:
        key = bytes(view[position : position + key_length])
        position += key_length
    (value_length,) = _U32.unpack_from(view, position)
    position += 4
    value = bytes(view[position : position + value_length])
    position += value_length
    (header_count,) = _U16.unpack_from(view, position)
    position += 2
    headers: list[tuple[str, bytes]] = []
    for _ in range(header_count):
        (name_length,) = _U16.unpack_from(view, position)
        position += 2
        name = bytes(view[position : position + name_length]).decode()
        position += name_length
        (header_length,) = _U32.unpack_from(view, position)
        position += 4
        headers.append((name, bytes(view[position : position + header_length])))
        position += header_length
    return SpoolRecord(topic, key, value, headers)


def _scan(data: bytes, start: int) -> tuple[list[tuple[SpoolRecord, int]], int]:
    """Whole, CRC-valid frames in ``data`` from ``start``; returns (record, end) pairs and the
    offset just past the last whole frame."""
    records: list[tuple[SpoolRecord, int]] = []
    position = start
    while position + _FRAME_HEAD.size <= len(data):
        length, crc = _FRAME_HEAD.unpack_from(data, position)
        body_start = position + _FRAME_HEAD.size
        body_end = body_start + length
        if body_end > len(data):
            break
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            break
        records.append((decode_payload(payload), body_end))
        position = body_end
    return records, position


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialized(
    method: Callable[Concatenate[Spool, _P], _R],
) -> Callable[Concatenate[Spool, _P], _R]:
    @functools.wraps(method)
    def locked(self: Spool, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._mutex:
            return method(self, *args, **kwargs)

    return locked


class Spool:
    """An exclusive, append-only, fsynced record log in one directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / SPOOL_FILE
        self._mutex = threading.RLock()
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # flock, not a pid file: the kernel releases it when the holder dies, even on
            # kill -9, so a crashed gateway never blocks its successor.
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._lock_fd)
            raise SpoolLockedError(f"spool {self.directory} is used by another process") from error
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._read_offset = 0
        self._end = 0
        self.recovered_bytes = self._recover()
        self._closed = False

    def _recover(self) -> int:
        """Cut a torn tail left by a crash; return how many bytes were dropped."""
        size = os.fstat(self._fd).st_size
        valid_end = 0
        while valid_end < size:
            found, position = self._frames(valid_end, size, 10_000)
            if not found:
                break
            valid_end = position
        if valid_end < size:
            os.ftruncate(self._fd, valid_end)
            os.fsync(self._fd)
        self._end = valid_end
        return size - valid_end

    def _frames(self, position: int, end: int, max_records: int) -> tuple[list[SpoolRecord], int]:
        """Whole frames from ``position`` (at most ``max_records``), stopping at the first
        torn or corrupt one; returns them and the offset just past the last."""
        records: list[SpoolRecord] = []
        while len(records) < max_records and position < end:
            chunk = os.pread(self._fd, min(_READ_CHUNK_BYTES, end - position), position)
            found, consumed = _scan(chunk, 0)
            if consumed == 0:
                # Either a frame bigger than one chunk, or the torn/corrupt tail.
                head = os.pread(self._fd, _FRAME_HEAD.size, position)
                if len(head) < _FRAME_HEAD.size:
                    break
                length, _ = _FRAME_HEAD.unpack(head)
                if position + _FRAME_HEAD.size + length > end:
                    break
                chunk = os.pread(self._fd, _FRAME_HEAD.size + length, position)
                found, consumed = _scan(chunk, 0)
                if consumed == 0:
                    break
            for record, frame_end in found[: max_records - len(records)]:
                records.append(record)
                consumed = frame_end
            position += consumed
        return records, position

    @property
    def pending_bytes(self) -> int:
        return self._end - self._read_offset

    def is_empty(self) -> bool:
        return self._end == self._read_offset

    @_serialized
    def append(self, records: list[SpoolRecord]) -> None:
        """Append and fsync once for the whole batch; durable when this returns."""
        if not records:
            return
        data = b"".join(encode_record(record) for record in records)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._end + written)
        os.fdatasync(self._fd)
        self._end += len(data)

    @_serialized
    def read(self, max_records: int) -> tuple[list[SpoolRecord], int]:
        """Up to ``max_records`` unsent records in order, and the offset to ``commit`` after
        they are all acknowledged."""
        records, position = self._frames(self._read_offset, self._end, max_records)
        if not records and self._read_offset < self._end:
            raise SpoolError(f"corrupt spool frame at offset {self._read_offset} in {self.path}")
        return records, position

    @_serialized
    def commit(self, offset: int) -> None:
        """Mark everything before ``offset`` as delivered; shrink the file when worthwhile."""
        if not self._read_offset <= offset <= self._end:
            raise SpoolError(f"commit offset {offset} outside [{self._read_offset}, {self._end}]")
        self._read_offset = offset
        if self._read_offset == self._end:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._read_offset = self._end = 0
        elif offset >= COMPACT_THRESHOLD_BYTES and offset * 2 >= self._end:
            self._compact()

    def _compact(self) -> None:
        """Copy the unsent tail to a new file and atomically swap it in."""
        temporary = self.path.with_suffix(".compact")
        new_fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            position = self._read_offset
            while position < self._end:
                chunk = os.pread(self._fd, min(_READ_CHUNK_BYTES, self._end - position), position)
                os.write(new_fd, chunk)
                position += len(chunk)
            os.fsync(new_fd)
            os.replace(temporary, self.path)
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)  # make the rename itself durable
            finally:
                os.close(directory_fd)
        except BaseException:
            os.close(new_fd)
            raise
        os.close(self._fd)
        self._fd = new_fd
        self._end -= self._read_offset
        self._read_offset = 0

    @_serialized
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)


def park_rejected(spool_dir: Path, records: list[SpoolRecord]) -> None:
    """Move records the broker will never accept out of the way, kept for an operator."""
    rejected = Spool(spool_dir / REJECTED_DIR)
    try:
        rejected.append(records)
    finally:
        rejected.close()
