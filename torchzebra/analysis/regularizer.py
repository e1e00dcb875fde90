"""The zero-block regulariser: ``sum_l w_l * R_l`` over the activations of the last training forward."""

from __future__ import annotations

import torch
from torch import nn

from ..nn.state import prepared_module, zebra_layers


def zero_block_loss(model: nn.Module) -> torch.Tensor:
    """The weighted sum over active layers of each layer's zero-block penalty (a differentiable scalar).

    Each layer computed its penalty (the config's ``penalty``: ``group_lasso``, ``l1`` or ``l2``) in the
    last forward pass in training mode with grad enabled; add ``lam * zero_block_loss(model)`` to the task loss.
    """
    terms = [layer.weight * layer.last_penalty for _, layer in zebra_layers(prepared_module(model, "zero_block_loss"))
             if layer.last_penalty is not None]
    if not terms:
        raise RuntimeError(
            "zero_block_loss() found no activations: call it after a forward pass in training mode "
            "(model.train()) with grad enabled, and with at least one active Zebra layer whose penalty is on "
            "(set_penalty(model, True); the engine turns it off in steps where lambda is 0)"
        )
    return torch.stack(terms).sum()
