"""One threshold per layer (what ``zebra calibrate`` searches) against one per channel, at the same kept fraction:
each named layer of a trained model is masked alone, every other layer kept whole, and the top-1 drop is measured
on held-out training images (without augmentation, picked as `zebra calibrate` picks them). The thresholds
are the score quantiles of the calibration images: over the whole layer, or over each channel apart (every
channel keeps the same fraction of its blocks). No BatchNorm statistics are re-estimated. Not part of the test suite.

    .venv/bin/python benchmarks/threshold_scope.py CHECKPOINT [--layers stem.2 layer1.0.relu ...]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from torchzebra.core import block_scores
from torchzebra.export.maps import capture_maps
from torchzebra.nn.state import zebra_layers
from torchzebra.training.building import build_data
from torchzebra.training.opening import load_trained
from torchzebra.workflows.no_training import _training_images

LAYERS = ["stem.2", "layer1.0.relu", "layer1.1.relu:1", "layer2.0.relu", "layer3.0.relu"]


def top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (%) of ``model`` on ``images``, 500 at a time."""
    with torch.inference_mode():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in zip(images.split(500), labels.split(500)))
    return 100 * correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--densities", nargs="+", type=float, default=[0.2, 0.35, 0.5])
    parser.add_argument("--images", type=int, default=512, help="calibration images (training images, as calibrate "
                        "picks them)")
    parser.add_argument("--held-out", type=int, default=6000, help="other training images, for the top-1 drop")
    parser.add_argument("--block-size", type=int, default=2)
    parser.add_argument("--score", default="max")
    args = parser.parse_args()

    model, config = load_trained(args.checkpoint, [f"zebra.score={args.score}", f"zebra.block_size={args.block_size}"])
    train_set, _, _ = build_data(dataclasses.replace(config, data=dataclasses.replace(config.data, augment=False)))
    (images, _), held_out = _training_images(train_set, (args.images, args.held_out), config.seed)
    layers = dict(zebra_layers(model))
    for layer in layers.values():
        layer.active, layer.threshold = True, torch.tensor(-1.0)  # every block kept
    dense = top1(model, *held_out)
    print(f"{args.checkpoint}: top-1 {dense:.2f} % on {args.held_out} held-out training images; block "
          f"{args.block_size}, {args.score} score, thresholds from {args.images} calibration images")
    print("| layer | kept blocks | drop, one threshold per layer (points) | drop, one per channel (points) |")
    print("|---|---|---|---|")
    maps = capture_maps(model, images)  # every layer's map with every block kept
    for name in args.layers:
        layer = layers[name]
        scores = block_scores(maps[name][0], args.block_size, args.score).float()
        per_channel = scores.transpose(0, 1).flatten(1)
        for density in args.densities:
            layer.threshold = torch.quantile(scores.flatten(), 1 - density)
            whole = top1(model, *held_out)
            layer.threshold = torch.quantile(per_channel, 1 - density, dim=1).view(-1, 1, 1)
            apart = top1(model, *held_out)
            print(f"| {name} | {density:.0%} | {dense - whole:.2f} | {dense - apart:.2f} |", flush=True)
        layer.threshold = torch.tensor(-1.0)


if __name__ == "__main__":
    main()
