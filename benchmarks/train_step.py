"""The main job's training step, dense and with Zebra, in fp32 NCHW and in the mode ``auto`` chooses here.

The step is the trainer's own (``training.trainer.train_step``) on the ``quick`` preset's model and settings
(CIFAR-stem ResNet-18 of width 16, 1x32x32 inputs, batch 128): the dense step, and the Zebra fine-tune's step
with its recipe (masks at the target densities, the l1 penalty; the median step is one without the
recalibration that every 20th step adds) and the dense teacher's distillation; also Zebra without the teacher, with
the one-pass CPU mask (``core/cpu_kernel.c``, where the mode's maps take it) and with the PyTorch ops instead;
and the step distilled from cached targets (``distill.targets=cached``: the teacher's logits read from a table made
once before training; that one pass over the training set is timed too, and spread over the fine-tune's steps).
All are timed alternately in one process, the medians printed with the ratios and their goals: the chosen mode's
dense step against fp32 NCHW (>= 1.8x faster) and the chosen mode's distilled Zebra step against its dense step
(<= 1.15x), with the teacher on each batch and with cached targets (their one pass included); the last column is
each distilled step's ratio over the mean steps, recalibrations in, as an epoch pays it.

    .venv/bin/python benchmarks/train_step.py [--repeats 20] [--batch-size 128] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from dataclasses import replace
from typing import Callable
from unittest import mock

import torch
from timing import alternating

from torchzebra.config import load_config
from torchzebra.core import cpu_kernel
from torchzebra.data import DataSpec
from torchzebra.training import distributed, keep_freed_memory
from torchzebra.training.building import build_prepared_model
from torchzebra.training.extensions import Distillation, distillation, plain_training_logits, zebra_extensions
from torchzebra.training.precision import resolve_precision
from torchzebra.training.trainer import new_run, to_device, train_step

SPEC = DataSpec("fashion-mnist", 10, 1, 32)
VARIANTS = ("dense", "zebra, PyTorch ops", "zebra", "zebra+teacher", "zebra+cached targets")
GOALS = {"speed-up": 1.8, "zebra": 1.15}
TRAINING_IMAGES = 60_000  # Fashion-MNIST's training split: the fine-tune's steps per epoch at a batch size


def dense_teacher(config, device: torch.device) -> torch.nn.Module:
    """The dense model of the quick preset (seeded weights) as the teacher, as ``zebra run`` hands it over (the
    prepared baseline, which the distiller runs as its plain model)."""
    torch.manual_seed(config.seed)
    return build_prepared_model(config, SPEC, False).to(device)


def make_runs(config, precision: str, channels_last: bool, device: torch.device, steps_per_epoch: int) -> dict:
    """A fresh TrainRun per variant, in one mode: the same seeded weights, the recipe of the Zebra fine-tune."""
    optim = replace(config.finetune, precision=precision, channels_last=channels_last)
    zebra = replace(config.zebra, enabled=True)
    runs = {}
    for variant in VARIANTS:
        torch.manual_seed(config.seed)
        model = build_prepared_model(config, SPEC, masked=variant != "dense").to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        extensions = zebra_extensions(zebra) if variant != "dense" else []
        if variant.startswith("zebra+"):
            targets = "cached" if variant.endswith("cached targets") else "batch"
            distilled = replace(config, distill=replace(config.distill, targets=targets))
            extensions += distillation(distilled, dense_teacher(config, device))
        runs[variant] = new_run(config, optim, model, distributed.current(), device, steps_per_epoch, extensions,
                                False)
        runs[variant].trained.train()
    return runs


def time_steps(runs: dict, batch: tuple[torch.Tensor, torch.Tensor], repeats: int,
               calibrate_every: int) -> dict[str, dict[str, float]]:
    """Seconds of one step per variant: the median step, the mean of all (the step index cycles, so each variant
    recalibrates at every ``calibrate_every``-th step, as an epoch does) and the mean of the recalibrating ones."""
    def step(name: str, run) -> Callable[[int], None]:
        inputs, labels = to_device(run, *batch)
        run.batch_index = torch.arange(len(labels), device=run.device)
        for extension in run.extensions:
            if getattr(extension, "cached", False):  # a table of the batch's rows: the same gather as the real one
                extension.targets = torch.randn(len(labels), SPEC.classes, device=run.device)

        def call(index: int) -> None:
            run.step = index % calibrate_every if calibrate_every else 1
            with (mock.patch.object(cpu_kernel, "usable", lambda *args: False) if name.endswith("PyTorch ops")
                  else contextlib.nullcontext()):
                train_step(run, inputs, labels)
        return call

    warmup = 2
    times = alternating({name: step(name, run) for name, run in runs.items()}, repeats, warmup)
    recalibrating = [calibrate_every and (warmup + k) % calibrate_every == 0 for k in range(repeats)]
    return {"median": {name: statistics.median(values) for name, values in times.items()},
            "mean": {name: statistics.mean(values) for name, values in times.items()},
            "recalibrating": {name: statistics.mean(t for t, due in zip(values, recalibrating) if due)
                              for name, values in times.items() if any(recalibrating)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per variant and mode")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the zebra command does
    config = load_config("quick", overrides=["device=cpu"])
    device = torch.device("cpu")
    chosen = resolve_precision(config.finetune, device)
    print(f"quick preset's model, batch {args.batch_size}x1x32x32, {args.threads} threads, torch {torch.__version__}; "
          f"auto chooses {chosen.describe()}; median of {args.repeats} alternating steps, and their mean")
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, 1, 32, 32, generator=generator),
             torch.randint(0, 10, (args.batch_size,), generator=generator))
    modes = {"fp32 NCHW": ("fp32", False), "chosen": (chosen.dtype, chosen.channels_last)}
    calibrate_every = config.zebra.calibrate_every
    steps_per_epoch = math.ceil(TRAINING_IMAGES / args.batch_size)
    timed = {mode: time_steps(make_runs(config, *settings, device, steps_per_epoch), batch, args.repeats,
                              calibrate_every)
             for mode, settings in modes.items()}
    fine_tune_steps = config.finetune.epochs * steps_per_epoch
    spread = {}  # each mode's one pass to cache the targets, a share of each step of the fine-tune
    for mode, settings in modes.items():
        seconds = time_target_cache(config, device, *settings)
        spread[mode] = seconds / fine_tune_steps
        print(f"{mode}: caching the targets (one pass of the teacher over the training set) takes {seconds:.1f} s, "
              f"{spread[mode] * 1e3:.1f} ms a step over the fine-tune's {fine_tune_steps} steps (added in the columns "
              "with their pass)")
    print("| mode | dense step | Zebra step, PyTorch ops | Zebra step | Zebra + teacher step | Zebra + cached targets "
          "step | Zebra / dense | Zebra + teacher / dense | Zebra + cached targets (+ their pass) / dense | the "
          "distilled steps, mean steps (recalibrations in) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, times in timed.items():
        m, mean = times["median"], times["mean"]
        steps = " | ".join(f"{m[variant] * 1e3:.1f} ms" for variant in VARIANTS)
        print(f"| {mode} | {steps} | {m['zebra'] / m['dense']:.2f}x | {m['zebra+teacher'] / m['dense']:.2f}x | "
              f"{(m['zebra+cached targets'] + spread[mode]) / m['dense']:.2f}x | "
              f"{mean['zebra+teacher'] / mean['dense']:.2f}x, "
              f"{(mean['zebra+cached targets'] + spread[mode]) / mean['dense']:.2f}x |")
    for mode, times in timed.items():
        if "zebra" in times["recalibrating"]:
            extra = times["recalibrating"]["zebra"] - times["median"]["zebra"]
            print(f"{mode}: a Zebra step that recalibrates takes {times['recalibrating']['zebra'] * 1e3:.1f} ms, "
                  f"{extra * 1e3:.1f} ms more than the median one ({extra / calibrate_every * 1e3:.1f} ms a step "
                  f"over {calibrate_every} steps)")
    medians = timed["chosen"]["median"]
    speed_up = timed["fp32 NCHW"]["median"]["dense"] / medians["dense"]
    print(f"chosen dense step {speed_up:.2f}x faster than fp32 NCHW (goal >= {GOALS['speed-up']}x: "
          f"{_verdict(speed_up >= GOALS['speed-up'])})")
    for name, seconds in (("teacher on each batch", medians["zebra+teacher"]),
                          ("cached targets, their pass included", medians["zebra+cached targets"] + spread["chosen"])):
        ratio = seconds / medians["dense"]
        print(f"chosen Zebra step distilled, {name}: {ratio:.2f}x its dense step (goal <= {GOALS['zebra']}x: "
              f"{_verdict(ratio <= GOALS['zebra'])})")


def time_target_cache(config, device: torch.device, precision: str, channels_last: bool) -> float:
    """Seconds of one pass of the teacher over the quick preset's training set (Fashion-MNIST, un-augmented), in
    one mode, as ``distill.targets=cached`` makes its table before a fine-tune."""
    optim = replace(config.finetune, precision=precision, channels_last=channels_last)
    teacher = Distillation(dense_teacher(config, device), cached=True).distiller.teacher  # the model its pass runs
    run = new_run(config, optim, teacher, distributed.current(), device, 1, [], False)  # steps: unused here
    plain_training_logits(teacher, run)  # warm-up: the data set read and copied, the kernels chosen
    started = time.perf_counter()
    plain_training_logits(teacher, run)
    return time.perf_counter() - started


def _verdict(met: bool) -> str:
    return "meets" if met else "misses"


if __name__ == "__main__":
    main()
