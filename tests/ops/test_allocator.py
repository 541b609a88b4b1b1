"""The worker process's allocator settings (ops.allocator)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# In a child of its own: in a long test session the heap already holds large free chunks,
# which glibc hands out before it maps anything, whatever the threshold (the check failed
# that way inside the whole suite).
_PROBE = """
import ctypes

from ops.allocator import return_large_blocks_to_the_os

MIB = 1 << 20


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
# Freeing an 8 MiB mapped block raises glibc's dynamic threshold to 8 MiB: from then on a
# fetch buffer of a few MiB would come from the heap and, freed, stay in the process.
freed = bytearray(8 * MIB)
del freed
assert return_large_blocks_to_the_os()
before = libc.mallinfo2().hblkhd
buffer = bytearray(MIB)
mapped = libc.mallinfo2().hblkhd - before
del buffer
print(mapped, libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_megabyte_buffer_is_mapped_even_after_larger_ones_were_freed() -> None:
    mapped, left = (int(n) for n in subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
    ).stdout.split())
    assert mapped >= 1 << 20  # the buffer was mapped of its own
    assert left == 0  # and unmapped when freed: back to the OS, not kept in the heap
