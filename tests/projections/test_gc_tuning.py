"""The projector process's collector settings (projections.gc_tuning)."""

from __future__ import annotations

import subprocess
import sys

from projections.gc_tuning import BATCH_THRESHOLDS

_PROBE = """
import gc
from projections.gc_tuning import tune_for_batches
before = gc.get_freeze_count()
tune_for_batches()
print(gc.get_threshold(), before, gc.get_freeze_count())
"""


def test_tuning_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    # In a child: the settings are the whole process's, and must not leak into the tests'.
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True).stdout.split(")")
    assert out[0] + ")" == str(BATCH_THRESHOLDS)
    before, after = (int(n) for n in out[1].split())
    assert before == 0 and after > 1000  # imported modules and their objects are frozen
