"""The data sets' torchvision transforms applied to whole batches on the batches' device.

Random steps draw their parameters per image from a ``torch.Generator`` (torchvision draws them per call from
the global generator); deterministic steps (normalisation, resize, centre crop) run on the batch unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_AS_IS = (v2.Normalize, v2.Resize, v2.CenterCrop)  # deterministic: the same on a batch as on each image


def random_crop(images: torch.Tensor, size: tuple[int, int], padding: list[int],
                generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` (N, C, H, W) zero-padded by ``padding`` (left, right, top, bottom) and cropped
    to ``size`` (h, w) at its own random place, as ``v2.RandomCrop`` does to one image."""
    padded = F.pad(images, padding)
    count, channels, height, width = padded.shape
    device = images.device
    top = torch.randint(height - size[0] + 1, (count, 1), generator=generator, device=device)
    left = torch.randint(width - size[1] + 1, (count, 1), generator=generator, device=device)
    rows = top + torch.arange(size[0], device=device)
    columns = left + torch.arange(size[1], device=device)
    index = (rows[:, :, None] * width + columns[:, None, :]).view(count, 1, -1).expand(-1, channels, -1)
    return padded.flatten(2).gather(2, index).view(count, channels, *size)


def random_flip(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` (N, C, H, W) mirrored left-right with probability ``p``."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _step(transform: v2.Transform) -> BatchTransform | None:
    """One transform for batches, or None when it has no per-batch form here."""
    if isinstance(transform, _AS_IS):
        return lambda images, generator: transform(images)
    if isinstance(transform, v2.RandomHorizontalFlip):
        return lambda images, generator: random_flip(images, transform.p, generator)
    if (isinstance(transform, v2.RandomCrop) and not transform.pad_if_needed and transform.fill == 0
            and transform.padding_mode == "constant"):
        padding = transform.padding or [0, 0, 0, 0]
        return lambda images, generator: random_crop(images, transform.size, padding, generator)
    return None


def batched(transform: Callable[[torch.Tensor], torch.Tensor] | None) -> BatchTransform | None:
    """``transform`` (None, a v2 transform or a ``v2.Compose`` of them) for batches; None if a step has no
    per-batch form (the data then stays with a DataLoader)."""
    steps = [] if transform is None else transform.transforms if isinstance(transform, v2.Compose) else [transform]
    parts = [_step(step) for step in steps]
    if any(part is None for part in parts):
        return None

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Every step of ``transform`` on the batch ``images``, in order."""
        for part in parts:
            images = part(images, generator)
        return images

    return apply
