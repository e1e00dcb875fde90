"""Network Slimming's sparsity training: an L1 penalty on every BatchNorm scale, as a subgradient step."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import number
from ..errors import ZebraError
from .groups import batchnorms


@torch.no_grad()
def bn_sparsity_step(model: nn.Module, s: float = 1e-5, exclude: tuple[str, ...] | list[str] = ()) -> None:
    """Add ``s * sign(gamma)`` to the gradient of every BatchNorm scale (call between backward() and step()).

    This is the subgradient of ``s * sum |gamma|`` (Liu et al. 2017: s=1e-4 for VGG, 1e-5 for ResNets).
    BatchNorms whose name matches an ``exclude`` pattern are left alone.
    """
    number(s, "s", least=0, expected="the sparsity weight is a finite number >= 0 (1e-5 for ResNets, 1e-4 for VGG)")
    if s == 0:
        return
    weights = [bn.weight for _, bn in batchnorms(model, exclude) if bn.weight.requires_grad]
    if not weights:
        raise ZebraError(f"{type(model).__name__} has no trainable affine BatchNorm layer to make sparse")
    missing = [w for w in weights if w.grad is None]
    if len(missing) == len(weights):
        raise ZebraError("bn_sparsity_step() found no gradients: call it after loss.backward(), "
                         "before optimizer.step()")
    grads = [w.grad for w in weights if w.grad is not None]
    torch._foreach_add_(grads, torch._foreach_mul([w.detach().sign() for w in weights if w.grad is not None], float(s)))


def bn_l1(model: nn.Module, exclude: tuple[str, ...] | list[str] = ()) -> float:
    """``sum |gamma|`` over the BatchNorms (to watch sparsity training)."""
    return float(sum(bn.weight.detach().abs().sum() for _, bn in batchnorms(model, exclude)))
