"""The worker process's allocator settings (ops.allocator)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from ops.allocator import return_large_blocks_to_the_os

_MIB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mmapped_bytes(libc: ctypes.CDLL) -> int:
    return int(libc.mallinfo2().hblkhd)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_megabyte_buffer_is_mapped_even_after_larger_ones_were_freed() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    # Freeing an 8 MiB mapped block raises glibc's dynamic threshold to 8 MiB: from then on a
    # fetch buffer of a few MiB would come from the heap and, freed, stay in the process.
    freed = bytearray(8 * _MIB)
    del freed
    assert return_large_blocks_to_the_os()
    before = _mmapped_bytes(libc)
    buffer = bytearray(_MIB)
    assert _mmapped_bytes(libc) - before >= _MIB
    del buffer
    assert _mmapped_bytes(libc) == before  # unmapped: back to the OS, not kept in the heap
