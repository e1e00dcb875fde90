"""One threshold per layer (what ``zebra calibrate`` searches) against one per channel, at the same kept fraction:
each named layer of a trained model is masked alone, every other layer kept whole, and the top-1 drop is measured
on held-out training images. The thresholds are the score quantiles of the calibration images: over the whole
layer, or over each channel apart (every channel keeps the same fraction of its blocks). No BatchNorm statistics
are re-estimated. Not part of the test suite.

    .venv/bin/python benchmarks/threshold_scope.py CHECKPOINT [--layers stem.2 layer1.0.relu ...]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, Subset

from torchzebra.core import block_scores
from torchzebra.nn.prepare import zebra_layers
from torchzebra.training.trainer import build_data, load_trained

LAYERS = ["stem.2", "layer1.0.relu", "layer1.1.relu:1", "layer2.0.relu", "layer3.0.relu"]


def layer_scores(model: torch.nn.Module, layer: torch.nn.Module, images: torch.Tensor, block_size: int,
                 score: str) -> torch.Tensor:
    """The block scores (N, C, Hb, Wb) of the map ``layer`` receives on ``images``."""
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(
        block_scores(args[0].detach(), block_size, score)))
    with torch.inference_mode():
        model(images)
    handle.remove()
    return seen[0].float()


def top1(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 (%) of ``model`` on ``loader``."""
    correct = total = 0
    with torch.inference_mode():
        for inputs, labels in loader:
            correct += (model(inputs).argmax(1) == labels).sum().item()
            total += len(labels)
    return 100 * correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--densities", nargs="+", type=float, default=[0.2, 0.35, 0.5])
    parser.add_argument("--images", type=int, default=512, help="calibration images (the first training images)")
    parser.add_argument("--held-out", type=int, default=6000, help="training images after them, for the top-1 drop")
    parser.add_argument("--block-size", type=int, default=2)
    parser.add_argument("--score", default="max")
    args = parser.parse_args()

    model, config = load_trained(args.checkpoint, [f"zebra.score={args.score}", f"zebra.block_size={args.block_size}"])
    train_set, _, _ = build_data(config)
    images = torch.stack([train_set[i][0] for i in range(args.images)])
    held_out = DataLoader(Subset(train_set, range(args.images, args.images + args.held_out)), batch_size=500)
    layers = dict(zebra_layers(model))
    for layer in layers.values():
        layer.active, layer.threshold = True, torch.tensor(-1.0)  # every block kept
    dense = top1(model, held_out)
    print(f"{args.checkpoint}: top-1 {dense:.2f} % on {args.held_out} held-out training images; block "
          f"{args.block_size}, {args.score} score, thresholds from {args.images} calibration images")
    print("| layer | kept blocks | drop, one threshold per layer (points) | drop, one per channel (points) |")
    print("|---|---|---|---|")
    for name in args.layers:
        layer = layers[name]
        scores = layer_scores(model, layer, images, args.block_size, args.score)
        per_channel = scores.transpose(0, 1).flatten(1)
        for density in args.densities:
            layer.threshold = torch.quantile(scores.flatten(), 1 - density)
            whole = top1(model, held_out)
            layer.threshold = torch.quantile(per_channel, 1 - density, dim=1).view(-1, 1, 1)
            apart = top1(model, held_out)
            print(f"| {name} | {density:.0%} | {dense - whole:.2f} | {dense - apart:.2f} |", flush=True)
        layer.threshold = torch.tensor(-1.0)


if __name__ == "__main__":
    main()
