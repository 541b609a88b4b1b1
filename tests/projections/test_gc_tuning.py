"""The projector process's collector settings (projections.gc_tuning)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import gc
from projections.gc_tuning import tune_for_batches
before, thresholds = gc.get_freeze_count(), gc.get_threshold()
tune_for_batches()
print(before, gc.get_freeze_count(), gc.get_threshold() == thresholds)
"""


def test_tuning_freezes_what_is_alive_and_keeps_the_thresholds() -> None:
    # In a child: the settings are the whole process's, and must not leak into the tests'.
    before, after, same = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
    ).stdout.split()
    assert int(before) == 0 and int(after) > 1000  # imported modules and their objects
    assert same == "True"  # raised thresholds held freed fetch buffers (see the module)
