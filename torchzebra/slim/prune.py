"""Carry out a slimming plan: physically (a new, smaller model) or as a mask (the same model, channels zeroed)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ZebraError
from ..nn import is_prepared, zebra_layers
from .groups import batchnorms, channel_groups, remove_channels
from .plan import SlimPlan
from .plan import plan as make_plan


def prune(
    model: nn.Module,
    ratio: float | None = None,
    example_inputs: torch.Tensor | None = None,
    *,
    plan: SlimPlan | None = None,
    min_channels: int = 1,
    exclude: tuple[str, ...] | list[str] = (),
) -> nn.Module:
    """A new model with the channels of ``plan`` (default: ``slim.plan(model, ratio, ...)``) removed.

    Coupled layers (a residual stream, a conv and the layers reading it) shrink together, through
    Torch-Pruning's dependency graph. ``model`` is not changed. A prepared model gives a prepared
    model with the same Zebra settings and thresholds.
    """
    if plan is None:
        if ratio is None:
            raise ZebraError("prune() needs ratio= (the fraction of channels to remove) or plan=")
        plan = make_plan(model, ratio, example_inputs, min_channels=min_channels, exclude=exclude)
    pruned = copy.deepcopy(model)
    groups = channel_groups(pruned, example_inputs)
    _check_plan(plan, groups)
    remove_channels(groups, {g.layers[0]: g.removed for g in plan.groups})
    if is_prepared(pruned):
        for _, layer in zebra_layers(pruned):
            layer.last_penalty = None
    return pruned


def _check_plan(plan: SlimPlan, groups) -> None:
    """A plan must come from a model of this structure (same groups, same channel counts)."""
    own = {g.names[0]: g for g in groups}
    for g in plan.groups:
        match = own.get(g.layers[0])
        if match is None or match.names != g.layers or match.channels != g.channels:
            raise ZebraError(f"the plan does not fit this model: layer group {', '.join(g.layers)} "
                             f"({g.channels} channels) is not in it; make the plan from the same model")


@torch.no_grad()
def apply_mask(model: nn.Module, plan: SlimPlan, example_inputs: torch.Tensor | None = None) -> nn.Module:
    """Zero the scale and shift of every planned-away channel in place, so those channels output zero.

    The model keeps its shapes; its outputs equal those of ``prune(model, plan=plan)``.
    """
    groups = {g.names[0]: g for g in channel_groups(model, example_inputs)}
    _check_plan(plan, groups.values())
    for g in plan.groups:
        removed = torch.as_tensor(g.removed, dtype=torch.long)
        for bn, channel_map in zip(groups[g.layers[0]].batchnorms, groups[g.layers[0]].channel_maps):
            indices = channel_map[removed]
            indices = indices[indices >= 0].to(bn.weight.device)
            bn.weight[indices] = 0
            bn.bias[indices] = 0
    return model


def structure(model: nn.Module) -> dict[str, int]:
    """The channel count of every BatchNorm: what a checkpoint stores so that a pruned model can be rebuilt."""
    return {name: bn.num_features for name, bn in batchnorms(model)}


def restructure(model: nn.Module, channels: dict[str, int], example_inputs: torch.Tensor | None = None) -> nn.Module:
    """Shrink a freshly built ``model`` in place to the BatchNorm channel counts of ``structure()``.

    The first channels are kept: the weights are loaded afterwards, so which ones does not matter.
    """
    if channels == structure(model):
        return model
    own = structure(model)
    if set(own) != set(channels):
        unknown = sorted(set(channels) ^ set(own))
        raise ZebraError("the stored structure names other BatchNorm layers than this model has "
                         f"({', '.join(unknown[:6])})")
    groups = channel_groups(model, example_inputs)
    removed = {}
    for g in groups:
        counts = {channels[name] for name in g.names}
        if len(counts) != 1 or not 1 <= (count := counts.pop()) <= g.channels:
            raise ZebraError(f"the stored structure gives coupled layers {', '.join(g.names)} different or impossible "
                             f"channel counts ({[channels[n] for n in g.names]} of {g.channels})")
        removed[g.names[0]] = list(range(count, g.channels))
    remove_channels(groups, removed)
    return model
