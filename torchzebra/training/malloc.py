"""The process's memory allocator, set for batch after batch of large CPU tensors."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_KEEP_FREE = 1 << 30  # return freed memory to the OS only past 1 GiB of free heap
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _user_chose_malloc_settings() -> bool:
    """Whether the environment sets glibc's malloc itself (its MALLOC_*_ variables or malloc tunables)."""
    return any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Make glibc's malloc take every allocation from its heap and keep freed memory for the next batch, instead of
    mapping each large tensor afresh and unmapping it when freed: the kernel then zeroes every page again on first
    touch, a third to half of a batch-128 CPU inference of a small ResNet on 2 cores (docs/PERFORMANCE.md). For the
    whole process; the memory high-water mark stays reserved. Malloc settings in the environment win: with any of
    ``_USER_SETTINGS`` or a ``glibc.malloc`` tunable set, nothing changes. True where it applied (Linux, glibc)."""
    if not sys.platform.startswith("linux") or _user_chose_malloc_settings():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library the process runs on
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE) == 1
