"""SGD with momentum, no weight decay on BatchNorm parameters and biases, and per-step LR schedules."""

from __future__ import annotations

import torch
from torch import nn

from ..config.sections import OptimSection


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.SGD:
    """SGD whose weight decay applies to weights of rank > 1 only (not BN scales/shifts or biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, steps: int):
    """A scheduler stepped once per optimisation step over ``steps`` steps in all (``cfg.schedule`` is one of
    ``config.sections.SCHEDULES``, checked when the config is read)."""
    schedules = {
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(steps, 1)),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1)),
        "constant": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
    }
    return schedules[cfg.schedule]()
