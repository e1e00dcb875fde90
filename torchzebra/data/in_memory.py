"""A data set of uint8 images held in memory, returned as float tensors in [0, 1] through a transform."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64; items are ``(transform(image), label)``."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float().div_(255)
        return (self.transform(image) if self.transform else image), self.labels[index]
