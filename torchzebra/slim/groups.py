"""Coupled channel groups of a CNN, from Torch-Pruning's dependency graph, seen through their BatchNorms.

A group is every channel index that must go together: a conv's outputs, its BatchNorm, the next
layers' inputs, and in a residual network every BatchNorm whose output is summed into the same stream.
Network Slimming scores a group's channel by the BatchNorm scales (gamma) of its members.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ZebraError
from ..nn import eval_mode, model_device, plain_model

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(eq=False)
class ChannelGroup:
    """One dependency group with BatchNorm members; channel ``j`` of the group is channel
    ``channel_maps[i][j]`` of ``batchnorms[i]`` (-1 where a member does not hold it)."""

    names: tuple[str, ...]
    batchnorms: tuple[nn.Module, ...]
    channel_maps: tuple[torch.Tensor, ...]
    group: Any  # the torch_pruning Group over all channels of its root layer

    @property
    def channels(self) -> int:
        return len(self.channel_maps[0])

    def gammas(self) -> torch.Tensor:
        """``|gamma|`` of every member per group channel (``members x channels``; 0 where not held)."""
        rows = torch.zeros(len(self.batchnorms), self.channels)
        for row, bn, channel_map in zip(rows, self.batchnorms, self.channel_maps):
            held = channel_map >= 0
            row[held] = bn.weight.detach().abs().float().cpu()[channel_map[held]]
        return rows


def batchnorms(model: nn.Module, exclude: tuple[str, ...] | list[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of every affine BatchNorm whose name matches no ``exclude`` pattern."""
    return [
        (name, module) for name, module in plain_model(model).named_modules()
        if isinstance(module, BATCHNORMS) and module.affine and not any(fnmatchcase(name, p) for p in exclude)
    ]


def default_inputs(model: nn.Module, size: int = 32) -> torch.Tensor:
    """A ``1 x C x size x size`` zero batch, ``C`` taken from the first conv (for tracing only)."""
    first = next((m for m in plain_model(model).modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ZebraError("cannot guess the input shape of a model without Conv2d: pass example_inputs=")
    return torch.zeros(1, first.in_channels, size, size, device=model_device(model))


def channel_groups(model: nn.Module, example_inputs: torch.Tensor | None = None) -> list[ChannelGroup]:
    """Every dependency group of ``model`` (plain or prepared) that contains a BatchNorm, in model order."""
    plain = plain_model(model)
    if not batchnorms(plain):
        raise ZebraError(f"{type(plain).__name__} has no affine BatchNorm layer: Network Slimming ranks channels by "
                         "their BatchNorm scale, so it needs conv-BN layers")
    inputs = default_inputs(plain) if example_inputs is None else example_inputs
    try:  # in eval mode: tracing must not update BatchNorm running statistics
        with eval_mode(plain), torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(plain, example_inputs=inputs, verbose=False)
    except Exception as error:  # tracing errors come in many types; all mean the same to the user
        raise ZebraError(f"Torch-Pruning could not trace {type(plain).__name__} with inputs of shape "
                         f"{tuple(inputs.shape)}: {error}. Pass example_inputs= of the shape the model "
                         "takes") from error
    names = {module: name for name, module in plain.named_modules()}
    position = {name: index for index, name in enumerate(names.values())}
    groups = []
    for group in graph.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        channels = len(group.items[0].idxs)
        members: dict[nn.Module, torch.Tensor] = {}
        for item in group.items:
            module = item.dep.target.module
            if isinstance(module, BATCHNORMS) and module.affine and graph.is_out_channel_pruning_fn(item.dep.handler):
                channel_map = members.setdefault(module, torch.full((channels,), -1, dtype=torch.long))
                roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
                channel_map[roots] = torch.as_tensor(item.idxs, dtype=torch.long)
        if members:
            ordered = sorted(members, key=lambda m: position[names[m]])
            groups.append(ChannelGroup(tuple(names[m] for m in ordered), tuple(ordered),
                                       tuple(members[m] for m in ordered), group))
    return sorted(groups, key=lambda g: position[g.names[0]])


def remove_channels(groups: list[ChannelGroup], removed: dict[str, list[int]]) -> None:
    """Physically remove channels: ``removed`` maps a group's first BatchNorm name to the indices to drop."""
    for channel_group in groups:
        indices = removed.get(channel_group.names[0])
        if indices:
            channel_group.group.prune(idxs=sorted(indices))
