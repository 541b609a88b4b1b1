"""Durable local spool: records that could not reach Kafka wait here, in order, on disk.

One file, ``<spool_dir>/spool.log``, of frames appended one after another and fsynced once
per appended batch; ``spool_frames`` describes a frame (magic, length, time, two CRCs,
record). The producer only reports a record as spooled after the fsync that covered it.

Opening the spool checks every frame:

* a valid header whose frame runs past the end of the file is the one thing a crash during
  an append leaves: a torn tail, never acknowledged, cut off and logged;
* anything else that does not check out (a flipped byte, bytes missing or inserted,
  anywhere in the file) is damage: the scanner resynchronises on the next valid frame, so
  only the damaged frames are lost. The damaged bytes are copied to
  ``quarantine-<UTC time>.bin`` beside the spool and a WARNING gives the counts; the spool
  file is then rewritten with the intact frames only;
* a spool written in format 1 (before the magic) is migrated to format 2.

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

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from ledger.exceptions import SpoolError, SpoolLockedError
from ledger.producer.spool_frames import (
    READ_CHUNK_BYTES,
    Damage,
    Frame,
    FrameScanner,
    SpoolRecord,
    TornTail,
    encode_record,
    looks_like_format_1,
    read_spooled_at,
    scan_format_1,
)

__all__ = ["Recovery", "Spool", "SpoolRecord", "park_rejected"]

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.log"
# Records the broker refuses for good (too large on their own) are parked here.
REJECTED_DIR = "rejected"
LOCK_FILE = "spool.lock"
QUARANTINE_PREFIX = "quarantine-"

# Compact once this many bytes at the head of the file are already resent, and they are
# more than half of it: rewriting a small tail is cheap, re-reading a large dead head is not.
COMPACT_THRESHOLD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Recovery:
    """What opening (or repairing) the spool found."""

    frames_kept: int
    damaged_regions: int = 0
    quarantined_bytes: int = 0
    quarantine_path: Path | None = None
    torn_tail_bytes: int = 0
    migrated_records: int = 0

    @property
    def changed_anything(self) -> bool:
        return bool(self.damaged_regions or self.torn_tail_bytes or self.migrated_records)


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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fsync_directory(directory: Path) -> None:
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # make a rename or a new file itself durable
    finally:
        os.close(directory_fd)


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
        self._oldest_ms: int | None = None
        self._closed = False
        try:
            self.recovery = self._open_existing()
        except BaseException:
            self.close()
            raise

    # -- opening and repair ------------------------------------------------------------

    def _open_existing(self) -> Recovery:
        size = os.fstat(self._fd).st_size
        if size and looks_like_format_1(self._fd, size):
            return self._migrate_format_1(size)
        # CRCs prove a frame intact; decoding every record here would double the time to
        # open a large backlog. A CRC-valid frame that does not decode (a bug, not damage)
        # is found by read(), which decodes and repairs.
        return self._repair(0, size, decode=False)

    def _repair(self, start: int, end: int, *, decode: bool) -> Recovery:
        """Check every frame in [start, end); keep the intact ones, quarantine the rest."""
        frames: list[tuple[int, int]] = []
        damage: list[Damage] = []
        torn: TornTail | None = None
        oldest: int | None = None
        for item in FrameScanner(self._fd, start, end, decode=decode):
            if isinstance(item, Frame):
                frames.append((item.start, item.end))
                if oldest is None:
                    oldest = item.spooled_at_ms
            elif isinstance(item, Damage):
                damage.append(item)
            else:
                torn = item
        quarantine_path = None
        if damage:
            # Quarantine first: a crash before the rewrite only quarantines twice.
            quarantine_path = self._quarantine(damage)
            self._rewrite(self._copy_ranges(frames))
            self._read_offset, self._end = 0, sum(e - s for s, e in frames)
        elif torn is not None:
            os.ftruncate(self._fd, torn.start)
            os.fsync(self._fd)
            self._read_offset, self._end = start, torn.start
        else:
            self._read_offset, self._end = start, end
        self._oldest_ms = oldest
        recovery = Recovery(
            frames_kept=len(frames),
            damaged_regions=len(damage),
            quarantined_bytes=sum(d.end - d.start for d in damage),
            quarantine_path=quarantine_path,
            torn_tail_bytes=0 if torn is None else torn.end - torn.start,
        )
        self._report(recovery, damage)
        return recovery

    def _report(self, recovery: Recovery, damage: list[Damage]) -> None:
        if recovery.damaged_regions:
            regions = ", ".join(f"[{d.start}, {d.end})" for d in damage[:5])
            more = "" if len(damage) <= 5 else f" and {len(damage) - 5} more"
            log.warning(
                "spool %s was damaged: %d frames kept, %d damaged regions (%s%s), "
                "%d bytes quarantined in %s",
                self.path, recovery.frames_kept, recovery.damaged_regions, regions, more,
                recovery.quarantined_bytes, recovery.quarantine_path,
            )
        if recovery.torn_tail_bytes:
            log.warning(
                "spool %s: cut a torn tail of %d bytes (a frame whose append never "
                "completed, so never acknowledged); %d frames kept",
                self.path, recovery.torn_tail_bytes, recovery.frames_kept,
            )

    def _quarantine(self, damage: list[Damage]) -> Path:
        """Copy the damaged regions into a new file beside the spool, durably."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.directory / f"{QUARANTINE_PREFIX}{stamp}.bin"
        number = 1
        while path.exists():
            number += 1
            path = self.directory / f"{QUARANTINE_PREFIX}{stamp}-{number}.bin"
        self._write_durably(path, self._copy_ranges((d.start, d.end) for d in damage))
        return path

    def _copy_ranges(self, ranges: Iterable[tuple[int, int]]) -> Iterable[bytes]:
        for start, end in ranges:
            position = start
            while position < end:
                chunk = os.pread(self._fd, min(READ_CHUNK_BYTES, end - position), position)
                if not chunk:
                    raise SpoolError(f"{self.path} shrank while being read")
                yield chunk
                position += len(chunk)

    def _write_durably(self, path: Path, chunks: Iterable[bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_directory(self.directory)

    def _rewrite(self, chunks: Iterable[bytes]) -> None:
        """Replace the spool file by ``chunks`` atomically (a crash leaves one or the other)."""
        temporary = self.path.with_suffix(".rewrite")
        self._write_durably(temporary, chunks)
        os.replace(temporary, self.path)
        _fsync_directory(self.directory)
        new_fd = os.open(self.path, os.O_RDWR)
        os.close(self._fd)
        self._fd = new_fd

    def _migrate_format_1(self, size: int) -> Recovery:
        """Rewrite a format-1 spool in format 2; whatever follows its last valid frame is
        quarantined (format 1 has nothing to resynchronise on)."""
        records: list[SpoolRecord] = []
        valid_end = 0
        for record, end in scan_format_1(self._fd, size):
            records.append(record)
            valid_end = end
        damage = [Damage(valid_end, size)] if valid_end < size else []
        quarantine_path = self._quarantine(damage) if damage else None
        spooled_at = int(os.fstat(self._fd).st_mtime * 1000)
        self._rewrite(encode_record(record, spooled_at) for record in records)
        self._read_offset = 0
        self._end = os.fstat(self._fd).st_size
        self._oldest_ms = spooled_at if records else None
        recovery = Recovery(
            frames_kept=len(records), damaged_regions=len(damage),
            quarantined_bytes=size - valid_end, quarantine_path=quarantine_path,
            migrated_records=len(records),
        )
        log.warning("spool %s: migrated %d records from format 1", self.path, len(records))
        self._report(recovery, damage)
        return recovery

    # -- state -------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        return self._end - self._read_offset

    def is_empty(self) -> bool:
        return self._end == self._read_offset

    def oldest_age_s(self) -> float:
        """Seconds since the oldest unsent record was spooled; 0 when there is none."""
        oldest = self._oldest_ms
        if oldest is None or self.is_empty():
            return 0.0
        return max(_now_ms() - oldest, 0) / 1000

    # -- appending, reading, committing --------------------------------------------------

    @_serialized
    def append(self, records: list[SpoolRecord]) -> None:
        """Append and fsync once for the whole batch; durable when this returns."""
        if not records:
            return
        spooled_at = _now_ms()
        data = b"".join(encode_record(record, spooled_at) for record in records)
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], self._end + written)
            os.fdatasync(self._fd)
        except OSError:
            # Leave no partial frame behind for a later, shorter append to half cover.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._end)
            raise
        if self.is_empty():
            self._oldest_ms = spooled_at
        self._end += len(data)

    @_serialized
    def read(self, max_records: int) -> tuple[list[SpoolRecord], int]:
        """Up to ``max_records`` unsent records in order, and the offset to ``commit`` after
        they are all acknowledged. Damage found here (the file changed under a running
        spool) is repaired as on open, then reading goes on."""
        records: list[SpoolRecord] = []
        position = self._read_offset
        for item in FrameScanner(self._fd, self._read_offset, self._end):
            if not isinstance(item, Frame) or item.record is None:
                self._repair(self._read_offset, self._end, decode=True)
                return self.read(max_records) if not self.is_empty() else ([], self._end)
            records.append(item.record)
            position = item.end
            if len(records) >= max_records:
                break
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
            self._oldest_ms = None
            return
        self._oldest_ms = read_spooled_at(self._fd, offset)
        if offset >= COMPACT_THRESHOLD_BYTES and offset * 2 >= self._end:
            self._compact()

    def _compact(self) -> None:
        """Copy the unsent tail to a new file and atomically swap it in."""
        self._rewrite(self._copy_ranges([(self._read_offset, self._end)]))
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


def park_rejected(spool_dir: Path, records: list[SpoolRecord]) -> Path:
    """Move records the broker will never accept out of the way, kept for an operator."""
    rejected = Spool(spool_dir / REJECTED_DIR)
    try:
        rejected.append(records)
    finally:
        rejected.close()
    return rejected.path
