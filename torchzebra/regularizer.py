"""The zero-block regulariser: ``sum_l w_l * R_l`` over the activations of the last training forward."""

from __future__ import annotations

import torch
from torch import nn

from .core import block_penalty, validate_penalty
from .nn.prepare import prepared_state, zebra_layers


def zero_block_loss(model: nn.Module, penalty: str | None = None) -> torch.Tensor:
    """The weighted sum over active layers of each layer's zero-block penalty (a differentiable scalar).

    ``penalty`` overrides the config's (``group_lasso``, ``l1`` or ``l2``). Needs a forward pass in
    training mode with grad enabled since the last eval forward; add ``lam * zero_block_loss(model)``
    to the task loss.
    """
    kind = validate_penalty(penalty or prepared_state(model, "zero_block_loss").config.penalty)
    terms = [
        layer.weight * block_penalty(layer.last_input, layer.block_size, kind)
        for _, layer in zebra_layers(model)
        if layer.last_input is not None
    ]
    if not terms:
        raise RuntimeError(
            "zero_block_loss() found no activations: call it after a forward pass in training mode "
            "(model.train()) with grad enabled, and with at least one active Zebra layer"
        )
    return torch.stack(terms).sum()
