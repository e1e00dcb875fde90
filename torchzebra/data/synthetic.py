"""Random images for throughput measurements only: never use them for accuracy claims."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Synthetic(Dataset):
    """``length`` random ``shape`` images with random labels; item ``i`` is the same on every call."""

    def __init__(self, length: int, shape: tuple[int, int, int], classes: int, seed: int = 0) -> None:
        self.length, self.shape, self.classes, self.seed = length, shape, classes, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.rand(self.shape, generator=generator)
        return image, torch.randint(self.classes, (), generator=generator)

    def batch(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random images and labels made at once on ``generator``'s device: fresh draws of the same
        distribution, not the items ``__getitem__`` returns."""
        device = generator.device
        images = torch.rand((count, *self.shape), generator=generator, device=device)
        return images, torch.randint(self.classes, (count,), generator=generator, device=device)
