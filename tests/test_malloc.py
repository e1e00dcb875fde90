"""glibc's malloc setting (training/malloc.py): freed batch memory kept for the next batch, unless the environment
sets malloc itself."""

import subprocess
import sys
from unittest import mock

import pytest

from torchzebra.training import keep_freed_memory

_FAULTS_PER_BATCH = """
import resource, sys, torch
from torchzebra.training import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1)  # a 64 MiB batch tensor, written, then freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


@pytest.mark.slow  # two Python processes that import torch
def test_keep_freed_memory_spares_the_page_faults_of_every_new_batch():
    """glibc maps each large tensor afresh and the kernel zeroes its pages on first touch, batch after batch; kept
    freed memory is reused: after the first batches, one batch in several at most grows the heap again (the zebra
    command sets it)."""
    runs = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", _FAULTS_PER_BATCH, mode], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[mode] = done.stdout.split()
    if runs["keep"][0] != "True":
        pytest.skip("no glibc mallopt in this C library")
    default_faults = [int(count) for count in runs["default"][1:]]
    kept_faults = [int(count) for count in runs["keep"][1:]]
    later_default, later_kept = default_faults[2:], kept_faults[2:]
    assert min(later_default) > 0 and sum(later_kept) <= sum(later_default) / 3, (default_faults, kept_faults)


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "131072"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_malloc_settings_in_the_environment_win(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with mock.patch("ctypes.CDLL") as libc:
        assert keep_freed_memory() is False
    libc.assert_not_called()
