"""Do the kept-block densities of training agree with those of evaluation? One Zebra checkpoint, the same batches.

Training runs the model in train mode (batch statistics in BatchNorm) in the precision and memory format its
run trained in (``train.precision``/``channels_last``, bf16 autocast + channels_last where chosen); evaluation,
counting and calibration run it in eval mode, float32, plain layout, as deployed. This script passes the same
training images (without augmentation) through the model both ways and prints, per instrumented layer and
overall, the fraction of blocks that come out non-zero (what the traffic counts), and the differences; the
training-mode pass also in float32, to separate what the precision changes from what BatchNorm's mode changes.

    .venv/bin/python benchmarks/train_eval_density.py runs/<run>/zebra/last.pt [--batches 8]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from typing import Iterator

import torch

from torchzebra.core import nonzero_blocks
from torchzebra.nn import zebra_layers
from torchzebra.training import open_checkpoint
from torchzebra.training.precision import resolve_precision


@contextlib.contextmanager
def kept_fractions(model: torch.nn.Module) -> Iterator[dict[str, list[float]]]:
    """Per layer, [non-zero blocks, blocks] of every map the model outputs while the context is open."""
    counts: dict[str, list[float]] = {}

    def hook(layer, inputs, output) -> None:
        if output.dim() == 4 and layer.skipped is None:
            kept = nonzero_blocks(output.detach().float(), layer.block_size)
            total = counts.setdefault(layer.site, [0.0, 0.0])
            total[0] += kept.sum().item()
            total[1] += kept.numel()

    handles = [layer.register_forward_hook(hook) for _, layer in zebra_layers(model)]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def densities(model: torch.nn.Module, batches: list[torch.Tensor], train: bool, bf16: bool,
              channels_last: bool) -> dict[str, float]:
    """Kept-block fraction per layer (and ``all``) of a copy of ``model`` over ``batches``, in the given mode."""
    model = copy.deepcopy(model).train(train)  # train mode updates BatchNorm's running statistics: a copy
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    with kept_fractions(model) as counts, torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        for inputs in batches:
            model(inputs.contiguous(memory_format=layout))
    fractions = {site: kept / total for site, (kept, total) in counts.items()}
    fractions["all"] = sum(k for k, _ in counts.values()) / sum(t for _, t in counts.values())
    return fractions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--batches", type=int, default=8, help="training batches of the run's batch size")
    args = parser.parse_args()
    opened = open_checkpoint(args.checkpoint, ["data.augment=false"], device=torch.device("cpu"))
    model, config = opened.model, opened.config
    chosen = resolve_precision(config.finetune, torch.device("cpu"))
    train_set, _ = opened.datasets
    size = config.data.batch_size
    batches = [torch.stack([train_set[i][0] for i in range(b * size, (b + 1) * size)]) for b in range(args.batches)]
    modes = {"eval fp32 (as deployed)": (False, False, False), "train fp32": (True, False, False),
             f"train {chosen.dtype}{' channels_last' if chosen.channels_last else ''} (as trained)":
                 (True, chosen.autocast, chosen.channels_last)}
    results = {name: densities(model, batches, *mode) for name, mode in modes.items()}
    names = list(results)
    print(f"{args.checkpoint}: kept-block fraction on {args.batches} x {size} training images (no augmentation)")
    print("| layer | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for site in results[names[0]]:
        print(f"| {site} | " + " | ".join(f"{results[name][site]:.3f}" for name in names) + " |")
    worst = max(abs(results[names[2]][s] - results[names[0]][s]) for s in results[names[0]] if s != "all")
    print(f"largest per-layer difference, as trained against as deployed: {worst:.3f}")


if __name__ == "__main__":
    main()
