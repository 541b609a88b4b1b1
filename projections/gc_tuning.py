"""The garbage collector's settings for a process that projects batches of events.

A projector holds whole batches of decoded events (pydantic models, their dicts and UUIDs)
while it applies them, and Python's default thresholds (700, 10, 10) then run a collection
every 700 surviving objects and, often, a full one that walks every live object again:
measured with one worker (bench/projector.py), that cost about a third of its time.
Nearly everything a batch allocates is freed by reference counting the moment the batch is
done, so collections only need to run rarely to catch cycles.
"""

from __future__ import annotations

import gc

# Young collections every 50,000 surviving container objects (a few batches' worth of
# events, a few MiB), full ones after 20 x 100 of those.
BATCH_THRESHOLDS = (50_000, 20, 100)


def tune_for_batches() -> None:
    """Move what is alive now (modules, settings, clients) out of the collector's reach and
    collect rarely. Meant for a process's entry point (``ledger project``, ``ledger
    rebuild``), not for a library call: it changes the whole process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*BATCH_THRESHOLDS)
