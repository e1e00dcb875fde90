"""Encode and decode throughput of the codec against torch.clone of the same tensor, in the same run.

The map is ResNet-18-sized: the output of ImageNet ResNet-18's first stage, 64x56x56 per image, a batch
of 8 (6.4 MB of float32), ReLU values in 30 % of its 4x4 blocks (70 % block sparsity). Throughput is
GB/s of dense float32 input; the ratio is against clone's. Goal: encode and decode each >= 0.25x of clone.

    .venv/bin/python benchmarks/codec.py [--repeats 15] [--formats zebra zebra_zvc zvc dense] [--bits 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from torchzebra import codec
from torchzebra.core import FORMATS

GOAL = 0.25


def sample_map(batch: int = 8, block: int = 4, kept: float = 0.3, seed: int = 0) -> torch.Tensor:
    """ReLU activations with ``1 - kept`` of the ``block x block`` blocks zero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(batch, 64, 56, 56, generator=g))
    keep = torch.rand(batch, 64, 56 // block, 56 // block, generator=g) < kept
    return x * keep.repeat_interleave(block, 2).repeat_interleave(block, 3)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--bits", type=int, default=8, choices=codec.WIDTHS)
    args = parser.parse_args()
    x = sample_map()
    gigabytes = x.numel() * 4 / 1e9
    print(f"map {tuple(x.shape)} float32 ({gigabytes * 1e3:.1f} MB), block 4, "
          f"{1 - (x.reshape(8, 64, 14, 4, 14, 4).abs().amax((3, 5)) > 0).float().mean():.0%} zero blocks, "
          f"{args.bits}-bit, {torch.get_num_threads()} threads, medians of {args.repeats}")
    clone = gigabytes / median_seconds(lambda: x.clone(), args.repeats)
    print(f"torch.clone            {clone:7.2f} GB/s")
    for fmt in args.formats:
        buf = codec.encode(x, fmt, 4, args.bits)
        encode = gigabytes / median_seconds(lambda: codec.encode(x, fmt, 4, args.bits), args.repeats)
        decode = gigabytes / median_seconds(lambda: codec.decode(buf), args.repeats)
        ratio_e, ratio_d = encode / clone, decode / clone
        verdict = "meets" if min(ratio_e, ratio_d) >= GOAL else "misses"
        print(f"{fmt:10s} encode {encode:6.2f} GB/s ({ratio_e:.2f}x)  decode {decode:6.2f} GB/s ({ratio_d:.2f}x)  "
              f"payload {codec.inspect(buf).payload_bytes / (x.numel() * args.bits / 8):.1%} of dense  "
              f"(goal >= {GOAL}x: {verdict})")


if __name__ == "__main__":
    main()
