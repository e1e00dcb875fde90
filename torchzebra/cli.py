"""The ``zebra`` command line. Errors in what the user gave are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import ZebraConfig, measure, prepare
from ._io import atomic_write_text
from .data import DatasetError, FashionMNIST
from .data.fashion_mnist import DEFAULT_ROOT
from .models import ResNet18


def _block_size(text: str) -> int | str:
    return text if text == "map" else int(text)


def _measure(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    data = FashionMNIST(args.data_root, train=False)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
    model = ResNet18(num_classes=10, in_channels=1, width=args.width).eval()
    config = ZebraConfig(block_size=args.block_size, score=args.score, threshold=args.threshold)
    report = measure(prepare(model, config), loader, bits=args.bits, max_batches=args.batches, progress=True)
    print(f"ResNet-18 (CIFAR stem, width {args.width}, untrained, seed {args.seed}) on Fashion-MNIST test images")
    print(report)
    if args.csv:
        report.to_csv(args.csv)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zebra`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="zebra", description="Zero-block regularisation of activation maps.")
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser(
        "measure",
        help="print the per-layer activation traffic of a small model on Fashion-MNIST batches",
        description="Instrument ResNet-18 (CIFAR stem) and print its activation traffic per layer and format.",
    )
    m.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="folder of the Fashion-MNIST .gz files")
    m.add_argument("--width", type=int, default=16, help="base width of the ResNet-18 (default 16)")
    m.add_argument("--block-size", type=_block_size, default=4, help="block side in elements, or 'map'")
    m.add_argument("--score", default="mean", help="block score: mean, max or rms")
    m.add_argument("--threshold", type=float, default=0.0, help="blocks scoring at most this are zeroed")
    m.add_argument("--bits", type=int, default=8, help="data width in bits (default 8)")
    m.add_argument("--batches", type=int, default=1, help="number of test batches to measure (default 1)")
    m.add_argument("--batch-size", type=int, default=128)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--csv", type=Path, help="also write the per-layer table as CSV here")
    m.add_argument("--json", type=Path, help="also write the report as JSON here")
    m.set_defaults(handler=_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zebra`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, DatasetError, OSError) as error:
        print(f"zebra {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
