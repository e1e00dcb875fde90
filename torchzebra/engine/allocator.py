"""The process's memory allocator, set for batch after batch of large CPU tensors."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_KEEP_FREE = 1 << 30  # return freed memory to the OS only past 1 GiB of free heap


def keep_freed_memory() -> bool:
    """Make glibc's malloc take every allocation from its heap and keep freed memory for the next batch, instead of
    mapping each large tensor afresh and unmapping it when freed: the kernel then zeroes every page again on first
    touch, about half of a batch-128 CPU inference of a small ResNet on 2 cores (docs/PERFORMANCE.md). For the whole
    process; the memory high-water mark stays reserved. True where it applied (Linux with glibc), else False."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library the process runs on
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE) == 1
