"""A model trained outside torchzebra: a small CNN of your own (``build``), trained in plain PyTorch on a generated
ImageFolder tree of three patterns and saved as a plain state dict. docs/OWN_MODEL.md imports it with ``zebra
import``, then calibrates, estimates and exports it.

    python examples/own_model.py work   # work/images/{train,val}/<class>/*.png and work/weights.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

CLASSES = ("checker", "horizontal", "vertical")  # sorted: ImageFolder numbers the class folders in this order
SIZE = 32
PER_CLASS = {"train": 48, "val": 16}
# Preprocessed as torchzebra reads an ImageFolder at data.size=32: resized to 8/7 of it, centre-cropped, ImageNet stats.
PREPROCESS = v2.Compose([v2.Resize(SIZE * 8 // 7, antialias=True), v2.CenterCrop(SIZE),
                         v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def build(classes: int, channels: int) -> nn.Module:
    """Your model's builder, as ``zebra import --model`` calls it: the data's classes and input channels."""
    def stage(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]

    return nn.Sequential(*stage(channels, 8, 1), *stage(8, 16, 2), *stage(16, 16, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def pattern(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One ``SIZE x SIZE`` RGB image of stripes (``horizontal``, ``vertical``) or a ``checker`` board, noisy."""
    period, phase = int(rng.integers(4, 10)), int(rng.integers(0, 10))
    y, x = np.mgrid[:SIZE, :SIZE] + phase
    on = {"horizontal": y % period < period // 2, "vertical": x % period < period // 2,
          "checker": (x // (period // 2) + y // (period // 2)) % 2 == 0}[kind]
    colours = rng.integers(0, 256, (2, 3))
    image = np.where(on[..., None], colours[0], colours[1]) + rng.normal(0, 20, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_images(root: Path, seed: int = 0) -> Path:
    """``root/train/<class>/*.png`` and ``root/val/<class>/*.png``: an ImageFolder tree of generated patterns."""
    rng = np.random.default_rng(seed)
    for split, count in PER_CLASS.items():
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(pattern(kind, rng)).save(folder / f"{i}.png")
    return root


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of one split, preprocessed, and their labels."""
    images, labels = [], []
    for label, kind in enumerate(CLASSES):
        for path in sorted((root / split / kind).glob("*.png")):
            pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
            images.append(PREPROCESS(pixels.float() / 255))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int) -> nn.Module:
    """A plain training loop: Adam, batches of 16, cross-entropy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(16):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Write the image tree and the trained model's state dict under the folder given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    root = make_images(args.folder / "images")
    model = train(build(len(CLASSES), 3), *load_split(root, "train"), args.epochs)
    images, labels = load_split(root, "val")
    with torch.no_grad():
        top1 = (model(images).argmax(1) == labels).float().mean().item()
    torch.save(model.state_dict(), args.folder / "weights.pt")
    print(f"wrote {root}/train, {root}/val ({len(CLASSES)} classes) and {args.folder / 'weights.pt'} "
          f"(val top-1 {top1:.1%} in plain PyTorch)")


if __name__ == "__main__":
    main()
