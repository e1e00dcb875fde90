"""VGG-11/16 with BatchNorm for small inputs: conv stages, global pool, one linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ZebraError

LAYOUTS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
}


class VGG(nn.Module):
    """VGG-BN: 3x3 conv-BN-ReLU layers and max-pools (the last pool is global), then a linear layer."""

    def __init__(self, depth: int = 11, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise ZebraError(f"depth={depth} is invalid: use one of {sorted(LAYOUTS)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in LAYOUTS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = int(item) * width // 64
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
