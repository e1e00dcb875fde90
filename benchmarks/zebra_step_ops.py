"""Where the Zebra step's extra time goes: every tensor operation of the main job's training step, timed and summed
by the line of torchzebra that called it.

The step is ``train_step.py``'s (the trainer's own, ``quick`` preset, batch 128x1x32x32, the mode ``auto`` chooses
here), with Zebra's recipe and without the teacher, or the dense step with ``--dense``. A ``TorchDispatchMode`` times
each operation as it runs, so its per-call overhead inflates every figure a little: read them against each other,
and against ``train_step.py``'s medians for the step as a whole. Operations of the backward pass run from the
autograd engine and are summed under the trainer's ``backward()`` line. Under the timer the masks take the PyTorch
ops (the one-pass CPU mask, ``core/cpu_kernel.c``, steps aside for any dispatch mode), so its table is the PyTorch
path's; the kernel's own time is measured after it, around its calls in as many plain steps.

    .venv/bin/python benchmarks/zebra_step_ops.py [--steps 10] [--dense] [--rows 20]
"""

from __future__ import annotations

import argparse
import collections
import math
import time
import traceback
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_step import TRAINING_IMAGES, make_runs

from torchzebra.config import load_config
from torchzebra.core import cpu_kernel
from torchzebra.training import keep_freed_memory
from torchzebra.training.precision import resolve_precision
from torchzebra.training.trainer import to_device, train_step


class OperationTimes(TorchDispatchMode):
    """Seconds and calls of every operation, by (operation, the innermost torchzebra line that called it)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: collections.defaultdict[tuple[str, str], float] = collections.defaultdict(float)
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        started = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - started
        frames = [frame for frame in traceback.extract_stack() if "torchzebra" in frame.filename]
        where = (f"{frames[-1].filename.split('torchzebra/')[-1]}:{frames[-1].lineno} {frames[-1].name}"
                 if frames else "(outside torchzebra)")
        key = (str(func.overloadpacket), where)
        self.seconds[key] += elapsed
        self.calls[key] += 1
        return out


def steps(run: Any, inputs: torch.Tensor, labels: torch.Tensor, count: int) -> None:
    """``count`` training steps on one batch, none of them one that recalibrates (as every calibrate_every-th does)."""
    for _ in range(count):
        run.step = 1
        train_step(run, inputs, labels)


def kernel_times(run: Any, inputs: torch.Tensor, labels: torch.Tensor, count: int) -> dict[str, float]:
    """Seconds per step in the one-pass CPU mask's C kernel (forward, backward), which the dispatcher does not see:
    timed around each call in plain steps, without the operation timer (whose overhead would slow the kernel's
    memory traffic too)."""
    library = cpu_kernel.library()
    seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
    if library is None:
        return {}
    originals = {}
    for name in ("zebra_mask_forward_bf16", "zebra_mask_backward_bf16", "zebra_mask_forward_f32",
                 "zebra_mask_backward_f32"):
        originals[name] = function = getattr(library, name)

        def timed(*args: Any, function: Any = function, name: str = name) -> Any:
            started = time.perf_counter()
            out = function(*args)
            seconds[name.split("_")[2]] += time.perf_counter() - started
            return out

        setattr(library, name, timed)
    try:
        steps(run, inputs, labels, count)
    finally:
        for name, function in originals.items():
            setattr(library, name, function)
    return {name: total / count for name, total in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 5 untimed ones)")
    parser.add_argument("--dense", action="store_true", help="the dense step instead of Zebra's")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()  # as the zebra command does
    config = load_config("quick", overrides=["device=cpu"])
    device = torch.device("cpu")
    chosen = resolve_precision(config.finetune, device)
    runs = make_runs(config, chosen.dtype, chosen.channels_last, device, math.ceil(TRAINING_IMAGES / 128))
    run = runs["dense" if args.dense else "zebra"]
    generator = torch.Generator().manual_seed(0)
    inputs, labels = to_device(run, torch.randn(128, 1, 32, 32, generator=generator),
                               torch.randint(0, 10, (128,), generator=generator))
    steps(run, inputs, labels, 5)  # untimed
    times = OperationTimes()
    with times:
        steps(run, inputs, labels, args.steps)
    total = sum(times.seconds.values()) / args.steps
    print(f"{'dense' if args.dense else 'Zebra'} step in {chosen.describe()}: {total * 1e3:.1f} ms of operations per "
          f"step (timed one by one; {args.steps} steps)")
    print("| ms per step | calls per step | operation | called from |")
    print("|---|---|---|---|")
    for (operation, where), seconds in sorted(times.seconds.items(), key=lambda item: -item[1])[:args.rows]:
        calls = times.calls[(operation, where)] / args.steps
        print(f"| {seconds / args.steps * 1e3:.2f} | {calls:g} | {operation} | {where} |")
    kernel = kernel_times(run, inputs, labels, args.steps)
    if kernel:
        print("one-pass CPU mask (core/cpu_kernel.c), ms per step in plain steps: "
              + ", ".join(f"{name} {seconds * 1e3:.2f}" for name, seconds in kernel.items()))


if __name__ == "__main__":
    main()
