"""Allocator settings of a long-running worker process (``ledger project``).

glibc serves a block larger than its mmap threshold with a mapping of its own, unmapped on
free. But the threshold is dynamic: each time such a block is freed, it rises to that block's
size (up to 32 MiB). The projector frees multi-MiB Kafka fetch buffers all the time, so after
the first few its buffers came from the heap instead (``bench/memory.py``: 1 MiB mapped at
every tenth of a run), and freed there they stayed in the process as free heap: 17-157 MiB
of it over 300,000 events, 25-76 MiB with the threshold fixed (the rest is small objects'
fragmentation). A fixed threshold keeps large buffers mapped, so what the worker no longer
holds goes back to the OS: over 1,010,000 events the worker's RSS at the tenths from
200,000 on went from 345-410 MiB to 270-380 MiB, 271 MiB at the end against 345.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
# Blocks from this size up are mapped. Fetch buffers (MiB) are; pymalloc's own 1 MiB arenas
# are mapped by Python itself; small objects stay on the heap, where mapping each would cost
# a system call.
MMAP_THRESHOLD = 256 * 1024


def return_large_blocks_to_the_os() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
