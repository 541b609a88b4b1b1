"""The garbage collector's settings for a process that projects batches of events.

A projector holds whole batches of decoded events (pydantic models, their dicts and UUIDs)
while it applies them, and every full collection walks every live object: the modules,
schemas and clients the process loaded at start too. ``gc.freeze()`` at the entry point
moves those out of the collector's reach for good, so full collections walk only what the
batches hold.

The thresholds stay Python's defaults. Raising them (50,000, 20, 100) made one worker
1.13-1.55x faster in A/B runs, but a worker then kept freed Kafka fetch buffers alive for
longer (some reference cycle holds them until a collection reaches it): with the producer
offering 5,000 events/s, which one worker sustains, its resident set swung between 400 and
804 MiB over 1,010,000 events against 212-309 MiB with the defaults (bench/memory.py
--rate 5000, one run each, back to back). A flat, small resident set is worth more to an
operator than that speed.

Making only the full collections rarer (700, 10, 100: young garbage collected as soon as
before) was measured too, on the quiet machine: one worker 8,633 and 8,446 events/s against
7,810 and 7,876 with the defaults (bench/profile_worker.py, 96,000 events, alternating runs;
the worker's CPU per event 78 against 88 us), but the resident set over 1,000,000 paced events
reached 401 MiB (215-371 at the tenths) against 305 (240-280). Some garbage that reaches the
oldest generation does hold freed buffers; 9% of speed was not worth a third more memory.
"""

from __future__ import annotations

import gc


def tune_for_batches() -> None:
    """Freeze what is alive now (modules, settings, clients) out of every collection. Meant
    for a process's entry point (``ledger project``, ``ledger rebuild``), not for a library
    call: it changes the whole process."""
    gc.collect()
    gc.freeze()
