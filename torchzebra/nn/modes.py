"""Train/eval modes for a while: every submodule gets its own mode back afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import ContextManager, Iterator

from torch import nn


@contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Switch ``model`` to train (or eval) mode inside the block; afterwards each submodule gets back its
    own mode (a user's frozen BatchNorm stays in eval even when the model trains)."""
    modes = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training  # a prepared model with one graph per mode reads it at each call


def eval_mode(model: nn.Module) -> ContextManager[nn.Module]:
    """``training_mode(model, False)``: evaluate, then give every submodule its mode back."""
    return training_mode(model, False)
