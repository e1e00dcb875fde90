"""``eval_mode``: run a model in evaluation mode for a while, then give every submodule its mode back."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch ``model`` to eval mode inside the block; afterwards each submodule gets back its own mode
    (a user's frozen BatchNorm stays in eval even when the model trains)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
