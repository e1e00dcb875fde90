"""What a prepared model carries besides its graph: the ZebraLayer container, the plain model it was made from and
its ZebraConfig; the queries and switches over them (``zebra_layers``, ``remove``, ``set_masking``, ...)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from .config import ZebraConfig
from .layer import ZebraLayer

CONTAINER = "zebra"  # the ModuleDict of a prepared model that holds its ZebraLayers
STATE = "prepared_state"  # attribute of the ZebraLayer container: deepcopy, pickle and torch.save keep it


@dataclass(frozen=True)
class PreparedState:
    """What ``prepare`` remembers of a model: the plain model it was made from and its ZebraConfig."""

    original: nn.Module
    config: ZebraConfig


def prepared_module(model: nn.Module, caller: str = "this function") -> fx.GraphModule:
    """The prepared model itself, or the one a ``torch.compile`` wrapper holds (same modules and weights);
    any other model is a ``ValueError`` naming ``caller``."""
    inner = _unwrapped(model)
    if isinstance(inner, fx.GraphModule) and is_prepared(inner):
        return inner
    raise ValueError(f"{caller}() takes a model returned by torchzebra.prepare() (or torch.compile of one); "
                     "this one is not prepared")


def prepared_state(model: nn.Module, caller: str = "this function") -> PreparedState:
    """The state of a prepared (possibly compiled) model; any other model is a ``ValueError`` naming ``caller``."""
    return getattr(getattr(prepared_module(model, caller), CONTAINER), STATE)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper runs, else the model itself."""
    return getattr(model, "_orig_mod", model) if not isinstance(model, fx.GraphModule) else model


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


def is_prepared(model: nn.Module) -> bool:
    """True for a model returned by ``prepare``, or ``torch.compile`` of one."""
    model = _unwrapped(model)
    return isinstance(model, fx.GraphModule) and hasattr(getattr(model, CONTAINER, None), STATE)


def remove(model: nn.Module) -> nn.Module:
    """Return the plain model a prepared one was made from (same object, with the current weights)."""
    original = prepared_state(model, "remove").original
    original.training = model.training  # the submodules are shared and keep their own modes
    return original


def plain_model(model: nn.Module) -> nn.Module:
    """The un-instrumented model of a possibly prepared one (a prepared model shares its modules with it)."""
    return remove(model) if is_prepared(model) else model


def zebra_layers(model: nn.Module) -> list[tuple[str, ZebraLayer]]:
    """The (call-site name, layer) pairs of a prepared model, in execution order."""
    return [(layer.site, layer) for layer in getattr(prepared_module(model, "zebra_layers"), CONTAINER).values()]


def set_masking(model: nn.Module, enabled: bool) -> None:
    """Switch the block masks of every layer on or off (off: the model computes the original outputs)."""
    for _, layer in zebra_layers(model):
        layer.masking = enabled


def set_penalty(model: nn.Module, enabled: bool) -> None:
    """Switch the penalty each layer computes in training on or off (off where nothing adds it to the loss,
    as with a zero lambda: ``zero_block_loss`` then finds no terms)."""
    for _, layer in zebra_layers(model):
        layer.penalized = enabled
