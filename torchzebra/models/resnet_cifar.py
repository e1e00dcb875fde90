"""ResNet-20/56 for 32x32 inputs (He et al. 2016, section 4.2): three stages of 16/32/64 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZebraError
from .resnet import BasicBlock


class CifarResNet(nn.Module):
    """ResNet-(6n+2) with 3x3 convolutions, stages of width w, 2w, 4w, global pool and a linear layer."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ZebraError(f"depth={depth} is invalid: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110)")
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for index, planes in enumerate((width, 2 * width, 4 * width)):
            layers = [BasicBlock(in_planes, planes, 1 if index == 0 else 2)]
            layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
