"""Parameters and multiply-accumulates of a model (plain or prepared), counted by Torch-Pruning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from ..nn import eval_mode, plain_model


@dataclass(frozen=True)
class ModelCost:
    """Parameter count and MACs of one forward pass of one input."""

    params: int
    macs: int


@torch.no_grad()
def model_cost(model: nn.Module, example_inputs: torch.Tensor) -> ModelCost:
    """Count parameters and MACs for one input of ``example_inputs``'s shape (the batch size is ignored)."""
    with eval_mode(plain_model(model)) as plain:
        macs, params = tp.utils.count_ops_and_params(plain, example_inputs[:1])
    return ModelCost(int(params), int(macs))
