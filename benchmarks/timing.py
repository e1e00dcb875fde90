"""Timing several variants of one piece of work fairly in one process: in rounds, the order alternating round by
round (so no variant always runs right after the same one), after warm-up rounds that are not kept."""

from __future__ import annotations

import time
from typing import Callable, Mapping

import torch


def alternating(calls: Mapping[str, Callable[[int], object]], repeats: int, warmup: int = 2,
                device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds of each of ``calls`` (called with the round's index, warm-up rounds counted) in each of ``repeats``
    rounds after ``warmup`` more; a CUDA ``device`` is synchronised before and after each call."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for index in range(warmup + repeats):
        for name, call in (order if index % 2 else order[::-1]):
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            call(index)
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                times[name].append(time.perf_counter() - started)
    return times
