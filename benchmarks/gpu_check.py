"""The GPU performance check in one run (under 8 minutes on one H100): what Zebra costs on a GPU, eager and compiled.

1. `overhead.py`'s comparison at batch 256 for the table of docs/PERFORMANCE.md: torchvision resnet18 at 64x64
   and the CIFAR-stem ResNet-18 (width 64) at 32x32, each in bf16 autocast + channels_last and in fp32, eager
   with the fused Triton kernels; some rows also eager with plain PyTorch ops (the reference path, the library's
   default) and the first row compiled. Each line gives train and inference ratios and counting (`tz.measure`)
   throughput against inference.
2. The `paper` preset on synthetic 64x64 data, 2 epochs of 100 steps, without and with Zebra, eager and compiled
   (the engine's own loop with device-side batches); images/s of the second epoch, against the training
   throughput of torchvision's resnet18 (the same network) on a batch already on the device (step 1, bf16 +
   channels_last, in the same mode).

The fused kernels are opt-in in the library; this check turns them on for the whole run (the `reference` rows
turn them off again). First it runs tests/test_fused.py (the kernels against the PyTorch reference; on a GPU
their first real launches) and puts its summary in the table's header (``--no-tests`` skips it). Measurements
run most wanted first, each caught on its own, and none starts after ``--budget-s`` seconds from the start
(tests included).
The markdown table is rewritten after every one to ``--out`` (default ``$OUT/gpu_check.md`` where ``$OUT`` is
set, else ``runs/gpu_check.md``), so a run cut short keeps what it measured.

    python benchmarks/gpu_check.py [--repeats 10] [--steps 100] [--device cuda] [--out FILE] [--eager-only]
        [--budget-s 480] [--no-tests]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (the comparison this check runs, from the same folder)

from torchzebra._io import atomic_write_text  # noqa: E402
from torchzebra.config import load_config
from torchzebra.core import fused_kernels, set_fused_kernels  # noqa: E402
from torchzebra.training import train

# (model, input size, precision, channels_last); every row eager with the fused kernels, and the modes in MORE_MODES
ROWS = [("torchvision", 64, "bf16", True), ("torchvision", 64, "fp32", False),
        ("cifar", 32, "bf16", True), ("cifar", 32, "fp32", False)]
MORE_MODES = {0: ("reference", "compiled"), 1: ("reference",), 3: ("reference",)}  # by row index, in this order
GPU_GOALS = {"train": 1.15, "infer": 1.10}  # compiled or fused Zebra on a GPU (issue 14)
MODE_NAMES = {"fused": "eager, fused kernels", "reference": "eager, PyTorch ops", "compiled": "compiled"}


def overhead_row(args: argparse.Namespace, row: tuple, mode: str) -> tuple[str, float]:
    """One table row: (model, precision) in ``mode``; and the baseline's training img/s."""
    model, size, precision, channels_last = row
    options = argparse.Namespace(compile=mode == "compiled", repeats=args.repeats, precision=precision,
                                 block_size=overhead.BLOCK_SIZE, penalty=overhead.PENALTY)
    x, y, base = overhead.setup(model, args.batch_size, size, args.device, channels_last)
    with fused_kernels(mode != "reference"):
        t = overhead.compare(base, x, y, options)
    rate = {key: args.batch_size / seconds for key, seconds in t.items()}
    train_ratio = t[("train", "zebra")] / t[("train", "baseline")]
    infer_ratio = t[("infer", "zebra")] / t[("infer", "baseline")]
    return (f"| {model} resnet18, {size}x{size} | {precision}, {'channels_last' if channels_last else 'contiguous'} | "
            f"{MODE_NAMES[mode]} | {rate[('train', 'baseline')]:,.0f} / {rate[('train', 'zebra')]:,.0f} | "
            f"{train_ratio:.2f}x "
            f"({'meets' if train_ratio <= GPU_GOALS['train'] else 'misses'} <= {GPU_GOALS['train']:.2f}) | "
            f"{rate[('infer', 'baseline')]:,.0f} / {rate[('infer', 'zebra')]:,.0f} | {infer_ratio:.2f}x "
            f"({'meets' if infer_ratio <= GPU_GOALS['infer'] else 'misses'} <= {GPU_GOALS['infer']:.2f}) | "
            f"{rate[('measure', 'zebra')]:,.0f} ({rate[('measure', 'zebra')] / rate[('measure', 'baseline')]:.0%}) |",
            rate[("train", "baseline")])


def paper_row(args: argparse.Namespace, zebra: bool, compiled: bool, own: float | None) -> str:
    """The paper preset's own training loop on synthetic data (device-side batches), with or without Zebra."""
    overrides = ["data.name=synthetic", "data.size=64", f"data.length={args.batch_size * args.steps}",
                 "data.test_subset=1024", "train.epochs=2", f"train.max_steps={args.steps}",
                 f"data.batch_size={args.batch_size}", f"device={args.device}",
                 f"train.compile={str(compiled).lower()}",
                 f"zebra.enabled={str(zebra).lower()}"]
    with tempfile.TemporaryDirectory() as folder:
        result = train(load_config("paper", overrides=overrides), Path(folder) / "run", masked=zebra, progress=False)
    rate = result.metrics[-1]["images_per_s"]
    versus = f"{rate / own:.0%} of the model's own {own:,.0f} img/s" if own else "n/a"
    return (f"| paper preset, synthetic 64x64, {'Zebra' if zebra else 'no Zebra'}, "
            f"{'compiled' if compiled else 'eager'} | {rate:,.0f} img/s | {versus} |")


def kernel_tests(timeout_s: float) -> str:
    """Run tests/test_fused.py here (on a GPU: the kernels' first real launches); its summary line."""
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", "tests/test_fused.py"],
                              cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"tests/test_fused.py: stopped after {timeout_s:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode:
        print(done.stdout[-4000:], done.stderr[-2000:], flush=True)
    return f"tests/test_fused.py: {lines[-1] if lines else 'no output'} (exit {done.returncode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch of the paper-preset run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--eager-only", action="store_true", help="skip the compiled rows (a quick dry run)")
    parser.add_argument("--budget-s", type=float, default=480, help="start no new measurement after this many seconds")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs")) / "gpu_check.md")
    parser.add_argument("--no-tests", action="store_true", help="skip running tests/test_fused.py first")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU (or --device cpu for a dry run of the script)")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    set_fused_kernels(True)  # off by default in the library; measured here (the `reference` rows turn them off)
    started = time.perf_counter()
    tests = "tests not run" if args.no_tests else kernel_tests(timeout_s=180)
    print(tests, f"[{time.perf_counter() - started:.0f} s]", flush=True)
    overhead_lines = [f"`python benchmarks/gpu_check.py` on {name}, torch {torch.__version__}, "
                      f"batch {args.batch_size}, "
                      f"{time.strftime('%Y-%m-%d')}; median of {args.repeats} alternating runs; Zebra block "
                      f"{overhead.BLOCK_SIZE}, mean score, {overhead.PENALTY} penalty 1e-2. {tests}.", "",
                      "| model, input | precision, layout | mode | train: base / Zebra img/s | ratio | "
                      "inference: base / Zebra img/s | ratio | counting img/s (share of inference) |",
                      "|---|---|---|---|---|---|---|---|"]
    paper_lines = ["", "| run | training throughput (2nd epoch) | against the model alone |", "|---|---|---|"]
    own_train: dict[str, float] = {}  # torchvision bf16 + channels_last baseline training img/s, per mode

    def write(line: str, lines: list[str]) -> None:  # the table so far, after every measurement
        lines.append(line)
        print(line, f"[{time.perf_counter() - started:.0f} s]", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, "\n".join([*overhead_lines, *paper_lines, ""]))

    # most wanted first: eager rows, the paper preset eagerly, then the compiled row and the preset compiled
    plan: list[tuple[str, tuple[Any, Any]]] = [("overhead", (index, "fused")) for index in range(len(ROWS))]
    plan += [("overhead", (index, mode)) for index, modes in MORE_MODES.items() for mode in modes if mode != "compiled"]
    plan += [("paper", (zebra, False)) for zebra in (False, True)]
    if not args.eager_only:
        plan += [("overhead", (index, "compiled")) for index, modes in MORE_MODES.items() if "compiled" in modes]
        plan += [("paper", (zebra, True)) for zebra in (False, True)]
    for kind, what in plan:
        if time.perf_counter() - started > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: skipped {kind} {what}", flush=True)
            continue
        try:
            if kind == "overhead":
                line, own = overhead_row(args, ROWS[what[0]], what[1])
                if what[0] == 0:
                    own_train[what[1]] = own
                write(line, overhead_lines)
            else:
                zebra, compiled = what
                write(paper_row(args, zebra, compiled, own_train.get("compiled" if compiled else "fused")), paper_lines)
        except Exception as error:  # one failing measurement must not cost the others (a GPU lease is short)
            print(f"{kind} {what} failed: {error!r}", flush=True)
            traceback.print_exc()
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
