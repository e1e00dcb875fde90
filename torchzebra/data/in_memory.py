"""A data set of uint8 images held in memory, returned as float tensors in [0, 1] through a transform."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (one image or a batch) as float32 in [0, 1]."""
    return images.float().div_(255)


class InMemoryImages(Dataset):
    """``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64; items are ``(transform(image), label)``."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_unit(self.images[index])
        return (self.transform(image) if self.transform else image), self.labels[index]

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` on ``device``, still uint8 and int64: copied there once, then kept."""
        cached = self.__dict__.get("_on_device")
        if cached is None or cached[0] != device:
            cached = self._on_device = (device, self.images.to(device), self.labels.to(device))
        return cached[1], cached[2]

    def __getstate__(self) -> dict[str, Any]:
        """The picklable state (for DataLoader workers): without the device copy."""
        return {key: value for key, value in self.__dict__.items() if key != "_on_device"}
