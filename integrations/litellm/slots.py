"""One spool per process: a LiteLLM proxy runs several workers, and a spool is locked to one.

Each process takes the first free slot ``SPOOL_DIR/process-<n>``: a slot is free when no
live process holds its lock (``flock``, released by the kernel when the holder dies, even
on kill -9). A restarted worker therefore takes a dead one's slot and its producer drains
that backlog first. Slots of processes that died and were not replaced (the proxy now runs
fewer workers) are drained too: at start, every other slot whose lock is free and whose
spool is not empty is opened by a short-lived producer that resends it and lets go. A
backlog that cannot be resent then (broker still away) stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ledger.exceptions import SpoolLockedError
from ledger.producer import LedgerProducer
from ledger.producer.spool import SPOOL_FILE
from ledger.settings import Settings

log = logging.getLogger(__name__)

SLOT_PREFIX = "process-"
MAX_SLOTS = 256
# How long a start spends resending an orphaned backlog before leaving it for the next one.
ORPHAN_DRAIN_TIMEOUT_S = 30.0


def slot_dir(base: Path, index: int) -> Path:
    return base / f"{SLOT_PREFIX}{index}"


async def start_in_free_slot(
    settings: Settings, *, source: str, base: Path | None = None, **options: Any
) -> LedgerProducer:
    """Start a producer on the first spool slot no live process holds."""
    root = base if base is not None else settings.resolved_spool_dir
    for index in range(MAX_SLOTS):
        producer = LedgerProducer.from_settings(
            settings, source=source, spool_dir=slot_dir(root, index), **options)
        try:
            await producer.start()
        except SpoolLockedError:
            continue  # a live process owns this one
        return producer
    raise SpoolLockedError(f"all {MAX_SLOTS} spool slots under {root} are in use")


def orphaned_slots(base: Path, own: Path | None) -> list[Path]:
    """Slots other than ``own`` with something spooled (their owner may still be alive)."""
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.glob(f"{SLOT_PREFIX}*")):
        spool = path / SPOOL_FILE
        if path != own and spool.is_file() and spool.stat().st_size > 0:
            found.append(path)
    return found


async def drain_orphans(
    settings: Settings, *, source: str, base: Path, own: Path | None,
    timeout_s: float = ORPHAN_DRAIN_TIMEOUT_S,
) -> list[Path]:
    """Resend the backlogs of dead processes' slots; returns the slots fully drained."""
    drained = []
    for path in orphaned_slots(base, own):
        producer = LedgerProducer.from_settings(
            settings, source=source, spool_dir=path, close_timeout_s=timeout_s)
        try:
            await producer.start()
        except SpoolLockedError:
            continue  # its owner is alive and drains it itself
        except Exception:
            log.exception("could not open the orphaned spool %s", path)
            continue
        # close() waits (up to close_timeout_s) for the backlog to reach Kafka.
        await producer.close()
        stats = producer.spool_stats()
        if stats is not None and stats.pending_bytes == 0:
            drained.append(path)
            log.info("resent the spool a dead process left in %s", path)
        else:
            log.warning("the spool a dead process left in %s is not resent yet; "
                        "the next start tries again", path)
    return drained


def drain_orphans_in_background(
    settings: Settings, *, source: str, base: Path, own: Path | None
) -> asyncio.Task[list[Path]]:
    return asyncio.get_running_loop().create_task(
        drain_orphans(settings, source=source, base=base, own=own),
        name="ledger-litellm-orphan-spools")
