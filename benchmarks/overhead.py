"""Time of a training step and an inference pass of resnet18, with and without Zebra; and exact counting.

CIFAR-size input (3x32x32), batch 64 by default: torchvision's resnet18 (7x7 stride-2 stem, so maps of
16x16 down to 1x1) and the project's CIFAR-stem ResNet-18 (maps of 32x32 down to 4x4), width 64, or 16
(``cifar16``, the ``quick`` preset's model). The baseline and the
Zebra model are timed alternately in the same run; the script prints one line per (model, eager or
compiled, phase) with the medians, their ratio and the goal. With ``--compile`` both models are compiled
(``torch.compile``) and compared with each other. Phases: ``train`` (a step with the penalty), ``infer``
(a forward under no_grad) and ``measure`` (``tz.measure``'s exact counting, against plain inference).
Goals: train <= 1.10x, inference <= 1.05x; counting >= 25 % of inference throughput.

    .venv/bin/python benchmarks/overhead.py [--models torchvision cifar] [--repeats 25] [--threads N]
        [--device cpu|cuda] [--compile] [--batch-size 64] [--size 32] [--precision fp32|bf16] [--channels-last]
        [--block-size 4] [--penalty group_lasso|l1|l2] [--keep-freed-memory] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
import torchvision
from timing import alternating
from torch import nn

import torchzebra as tz
from torchzebra.models import ResNet18
from torchzebra.training import keep_freed_memory

MODELS = {
    "torchvision": lambda: torchvision.models.resnet18(num_classes=10),
    "cifar": lambda: ResNet18(num_classes=10, in_channels=3, width=64, stem="cifar"),
    "cifar16": lambda: ResNet18(num_classes=10, in_channels=3, width=16, stem="cifar"),  # the `quick` preset's width
}
GOALS = {"train": 1.10, "infer": 1.05}
BLOCK_SIZE, PENALTY = 4, "group_lasso"  # the Zebra settings of every figure this script printed before --block-size


def train_step(model: nn.Module, optimizer, x, y, lam: float | None, autocast: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = nn.functional.cross_entropy(model(x), y)
        if lam is not None:
            loss = loss + lam * tz.zero_block_loss(model)
    loss.backward()
    optimizer.step()


def timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()``, synchronising the device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def each_round(call: Callable[[], object]) -> Callable[[int], object]:
    """``call`` as ``alternating`` calls it, with the round's index (unused)."""
    return lambda index: call()


def _phase_call(phase: str, name: str, model, optimizer, x, y, args) -> Callable[[], object]:
    if phase == "train":
        return lambda: train_step(model, optimizer, x, y, 1e-2 if name == "zebra" else None, args.precision == "bf16")
    if phase == "measure":
        return lambda: tz.measure(model, [x])  # exact counting of every map (runs the eager module)

    def infer():
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            model(x)
    return infer


def setup(name: str, batch: int, size: int, device: torch.device | str, channels_last: bool):
    """A seeded random batch (inputs, labels) and a fresh model ``name``, in the chosen memory layout."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,), device=device)
    return x, y, MODELS[name]().to(device, memory_format=layout)


def zebra_twin(base: nn.Module, block_size: int = BLOCK_SIZE, penalty: str = PENALTY) -> nn.Module:
    """A prepared copy of ``base`` with this script's settings."""
    return tz.prepare(copy.deepcopy(base), tz.ZebraConfig(block_size=block_size, threshold=0.05, penalty=penalty))


def compare(base: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> dict[tuple[str, str], float]:
    """Median seconds per (phase, model) with baseline and Zebra runs alternating."""
    zebra = zebra_twin(base, args.block_size, args.penalty)
    models = {"baseline": base, "zebra": zebra}
    runners = {k: torch.compile(m) if args.compile else m for k, m in models.items()}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    results: dict[tuple[str, str], list[float]] = {}
    for phase in ("infer", "train", "measure"):
        for model in models.values():
            model.train(phase == "train")
        pairs = [("baseline", "infer"), ("zebra", "measure")] if phase == "measure" else [(k, phase) for k in models]
        calls = {name: _phase_call(how, name, runners[name], optimizers[name], x, y, args) for name, how in pairs}
        times = alternating({name: each_round(call) for name, call in calls.items()}, args.repeats,
                            device=x.device)
        results.update({(phase, name): values for name, values in times.items()})
    return {key: statistics.median(times) for key, times in results.items()}


def profile_inference(base: nn.Module, x: torch.Tensor, args) -> None:
    """Print the kernels that one inference of each model spends its time in (``--profile``), 3 batches."""
    for name, model in (("baseline", base.eval()), ("zebra", zebra_twin(base, args.block_size, args.penalty).eval())):
        runner = torch.compile(model) if args.compile else model
        infer = _phase_call("infer", name, runner, None, x, None, args)
        for _ in range(2):
            infer()  # compiled and warm before the profile
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if x.device.type == "cuda" else [])
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(3):
                timed(infer, x.device)
        key = "self_cuda_time_total" if x.device.type == "cuda" else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=key, row_limit=8, max_name_column_width=70)
        print(f"{name}, 3 inferences:\n{table}")


def _report(name: str, mode: str, medians: dict[tuple[str, str], float], batch: int) -> None:
    for phase in ("train", "infer"):
        base_t, zebra_t = medians[(phase, "baseline")], medians[(phase, "zebra")]
        ratio, goal = zebra_t / base_t, GOALS[phase]
        print(f"resnet18 {name:11s} {mode:8s} {phase:7s} baseline {base_t * 1e3:8.2f} ms  zebra {zebra_t * 1e3:8.2f} ms"
              f"  ratio {ratio:.3f}x  (goal <= {goal:.2f}x: {'meets' if ratio <= goal else 'misses'})")
    infer_t, count_t = medians[("measure", "baseline")], medians[("measure", "zebra")]
    share = infer_t / count_t
    print(f"resnet18 {name:11s} {mode:8s} measure  inference {batch / infer_t:9.0f} img/s  counting "
          f"{batch / count_t:9.0f} img/s  = {share:.0%} of inference  "
          f"(goal >= 25%: {'meets' if share >= .25 else 'misses'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["torchvision", "cifar"])
    parser.add_argument("--repeats", type=int, default=25,
                        help="timed runs per phase and model (single compiled calls vary by +-15 %% on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input height and width (default 32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="compare compiled Zebra with the compiled baseline")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--block-size", type=int, default=BLOCK_SIZE)
    parser.add_argument("--penalty", choices=["group_lasso", "l1", "l2"], default=PENALTY)
    parser.add_argument("--profile", action="store_true", help="also print where one inference spends its time")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc's malloc keeps freed memory, as the zebra command sets it "
                             "(engine.keep_freed_memory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory: this C library has no glibc mallopt")
    device = torch.device(args.device)
    print(f"input {args.batch_size}x3x{args.size}x{args.size}, {device}, {args.threads} threads, {args.precision}, "
          f"{'malloc keeps freed memory, ' if args.keep_freed_memory else ''}"
          f"{'channels_last' if args.channels_last else 'contiguous'}, median of {args.repeats} alternating runs; "
          f"Zebra: block {args.block_size}, mean score, threshold 0.05, {args.penalty} penalty with lambda 1e-2")
    for name in args.models:
        x, y, model = setup(name, args.batch_size, args.size, device, args.channels_last)
        _report(name, "compiled" if args.compile else "eager", compare(model, x, y, args), args.batch_size)
        if args.profile:
            profile_inference(model, x, args)


if __name__ == "__main__":
    main()
