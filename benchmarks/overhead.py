"""Time of a training step and an inference pass of resnet18, with and without Zebra.

CIFAR-size input (3x32x32), batch 64, CPU: torchvision's resnet18 (7x7 stride-2 stem, so maps of 16x16
down to 1x1) and the project's CIFAR-stem ResNet-18 (maps of 32x32 down to 4x4). The baseline and the
Zebra model are timed alternately in the same run; the script prints medians and their ratios.
Goals: training step <= 1.10x, inference <= 1.05x.

    .venv/bin/python benchmarks/overhead.py [--models torchvision cifar] [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torchvision
from torch import nn

import torchzebra as tz
from torchzebra.models import ResNet18

MODELS = {
    "torchvision": lambda: torchvision.models.resnet18(num_classes=10),
    "cifar": lambda: ResNet18(num_classes=10, in_channels=3, width=64, stem="cifar"),
}


def train_step(model: nn.Module, optimizer, x, y, lam: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    if lam is not None:
        loss = loss + lam * tz.zero_block_loss(model)
    loss.backward()
    optimizer.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(base: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[tuple[str, str], float]:
    """Median seconds per (phase, model) with baseline and Zebra runs alternating."""
    zebra = tz.prepare(copy.deepcopy(base), tz.ZebraConfig(block_size=4, threshold=0.05))
    models = {"baseline": base, "zebra": zebra}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    lams = {"baseline": None, "zebra": 1e-2}
    results: dict[tuple[str, str], list[float]] = {}
    for phase in ("infer", "train"):
        for model in models.values():
            model.train(phase == "train")
        for repeat in range(repeats + 2):  # two warm-up rounds; the order alternates to cancel order bias
            for name, model in (list(models.items()) if repeat % 2 else list(models.items())[::-1]):
                if phase == "train":
                    t = timed(lambda: train_step(model, optimizers[name], x, y, lams[name]))
                else:
                    with torch.no_grad():
                        t = timed(lambda: model(x))
                if repeat >= 2:
                    results.setdefault((phase, name), []).append(t)
    return {key: statistics.median(times) for key, times in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["torchvision", "cifar"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"input {args.batch_size}x3x32x32, CPU, {args.threads} threads, median of {args.repeats} alternating "
          "runs; Zebra: block 4, mean score, threshold 0.05, group-lasso penalty with lambda 1e-2")
    for name in args.models:
        torch.manual_seed(0)
        x, y = torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
        medians = compare(MODELS[name](), x, y, args.repeats)
        for phase, goal in (("train", 1.10), ("infer", 1.05)):
            base_t, zebra_t = medians[(phase, "baseline")], medians[(phase, "zebra")]
            ratio = zebra_t / base_t
            print(f"resnet18 {name:11s} {phase:5s}  baseline {base_t * 1e3:7.1f} ms  zebra {zebra_t * 1e3:7.1f} ms  "
                  f"ratio {ratio:.3f}x  (goal <= {goal:.2f}x: {'meets' if ratio <= goal else 'misses'})")


if __name__ == "__main__":
    main()
