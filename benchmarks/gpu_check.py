"""The GPU performance check in one run (under 8 minutes on one H100): what Zebra costs on a GPU, eager and compiled.

1. `overhead.py`'s comparison at batch 256 for the table of docs/PERFORMANCE.md: torchvision resnet18 at 64x64
   and the CIFAR-stem ResNet-18 (width 64) at 32x32, each in bf16 autocast + channels_last and in fp32, eager;
   the first row (and its fp32 twin) compiled as well. Each line gives train and inference ratios and counting
   (`tz.measure`) throughput against inference.
2. The `paper` preset on synthetic 64x64 data, 2 epochs of 100 steps, without and with Zebra (the engine's own
   loop: device-side batches, compile as the preset sets it); images/s of the second epoch, against the
   training throughput of torchvision's resnet18 (the same network) on a batch already on the device (step 1,
   bf16 + channels_last, compiled like the preset).

It prints a markdown table and writes it to ``--out`` (default ``$OUT/gpu_check.md`` where ``$OUT`` is set,
else ``runs/gpu_check.md``).

    python benchmarks/gpu_check.py [--repeats 10] [--steps 100] [--device cuda] [--out FILE] [--eager-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (the comparison this check runs, from the same folder)

from torchzebra._io import atomic_write_text  # noqa: E402
from torchzebra.engine import load_config, train  # noqa: E402

# (model, input size, precision, channels_last, compiled too)
ROWS = [("torchvision", 64, "bf16", True, True), ("torchvision", 64, "fp32", False, True),
        ("cifar", 32, "bf16", True, False), ("cifar", 32, "fp32", False, False)]
GPU_GOALS = {"train": 1.15, "infer": 1.10}  # compiled or fused Zebra on a GPU (issue 14)


def overhead_rows(args: argparse.Namespace) -> tuple[list[str], dict[tuple[str, bool], float]]:
    """One table row per (model, precision, eager or compiled); and torchvision's baseline training img/s per
    (precision, compiled)."""
    lines, own_train = [], {}
    for model, size, precision, channels_last, also_compiled in ROWS:
        for compiled in (False, True) if also_compiled and not args.eager_only else (False,):
            options = argparse.Namespace(compile=compiled, repeats=args.repeats, precision=precision)
            x, y, base = overhead.setup(model, args.batch_size, size, args.device, channels_last)
            started = time.perf_counter()
            t = overhead.compare(base, x, y, options)
            rate = {key: args.batch_size / seconds for key, seconds in t.items()}
            train_ratio, infer_ratio = t[("train", "zebra")] / t[("train", "baseline")], t[("infer", "zebra")] / t[("infer", "baseline")]
            mode = "compiled" if compiled else "eager"
            goals = GPU_GOALS if compiled else overhead.GOALS
            lines.append(
                f"| {model} resnet18, {size}x{size} | {precision}, {'channels_last' if channels_last else 'contiguous'} | "
                f"{mode} | {rate[('train', 'baseline')]:,.0f} / {rate[('train', 'zebra')]:,.0f} | {train_ratio:.2f}x "
                f"({'meets' if train_ratio <= goals['train'] else 'misses'} <= {goals['train']:.2f}) | "
                f"{rate[('infer', 'baseline')]:,.0f} / {rate[('infer', 'zebra')]:,.0f} | {infer_ratio:.2f}x "
                f"({'meets' if infer_ratio <= goals['infer'] else 'misses'} <= {goals['infer']:.2f}) | "
                f"{rate[('measure', 'zebra')]:,.0f} ({rate[('measure', 'zebra')] / rate[('measure', 'baseline')]:.0%}) |")
            print(lines[-1], f"[{time.perf_counter() - started:.0f} s]", flush=True)
            if model == "torchvision":
                own_train[(precision, compiled)] = rate[("train", "baseline")]
    return lines, own_train


def paper_rows(args: argparse.Namespace, own_train: dict[tuple[str, bool], float]) -> list[str]:
    """The paper preset's own training loop on synthetic data, without and with Zebra."""
    lines = []
    overrides = ["data.name=synthetic", "data.size=64", f"data.length={args.batch_size * args.steps}",
                 "data.test_subset=1024", "train.epochs=2", f"train.max_steps={args.steps}",
                 f"data.batch_size={args.batch_size}", f"device={args.device}"]
    own = own_train.get(("bf16", True), own_train.get(("bf16", False)))  # the preset: bf16, channels_last, compiled
    for zebra in (False, True):
        config = load_config("paper", overrides=[*overrides, f"zebra.enabled={str(zebra).lower()}"])
        with tempfile.TemporaryDirectory() as folder:
            result = train(config, Path(folder) / "run", zebra=zebra, progress=False)
        rate = result.metrics[-1]["images_per_s"]
        versus = f"{rate / own:.0%} of the model's own {own:,.0f} img/s" if own else "n/a"
        lines.append(f"| paper preset, synthetic 64x64, {'Zebra' if zebra else 'no Zebra'} | {rate:,.0f} img/s | {versus} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch of the paper-preset run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled rows (a quick dry run)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs")) / "gpu_check.md")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU (or --device cpu for a dry run of the script)")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    header = [f"`python benchmarks/gpu_check.py` on {name}, torch {torch.__version__}, batch {args.batch_size}, "
              f"{time.strftime('%Y-%m-%d')}; median of {args.repeats} alternating runs; Zebra block 4, mean score, "
              "group-lasso penalty 1e-2.", "",
              "| model, input | precision, layout | mode | train: base / Zebra img/s | ratio | "
              "inference: base / Zebra img/s | ratio | counting img/s (share of inference) |",
              "|---|---|---|---|---|---|---|---|"]
    lines, own_train = overhead_rows(args)
    paper = ["", "| run | training throughput (2nd epoch) | against the model alone |", "|---|---|---|",
             *paper_rows(args, own_train)]
    table = "\n".join([*header, *lines, *paper, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, table)
    print(f"\n{table}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
