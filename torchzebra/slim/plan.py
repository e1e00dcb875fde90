"""Which channels Network Slimming keeps: a global threshold over BatchNorm scales, with a per-layer floor."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from .._checks import fraction, whole
from ..errors import ZebraError
from .groups import ChannelGroup, channel_groups


@dataclass(frozen=True)
class GroupPlan:
    """The channels kept in one coupled group; every BatchNorm in ``layers`` keeps the same channels."""

    layers: tuple[str, ...]
    channels: int
    keep: tuple[int, ...]  # group channel indices kept, ascending
    floored: bool  # the global threshold would have kept fewer than the floor

    @property
    def removed(self) -> list[int]:
        kept = set(self.keep)
        return [c for c in range(self.channels) if c not in kept]


@dataclass(frozen=True)
class SlimPlan:
    """A pruning decision for a whole model (``plan`` makes it; ``prune`` and ``apply_mask`` carry it out)."""

    ratio: float  # asked for: the fraction of BatchNorm channels to remove
    threshold: float  # |gamma| at or below which a channel goes (its group's largest |gamma| decides)
    groups: tuple[GroupPlan, ...]
    excluded: tuple[str, ...]  # BatchNorms left whole

    @property
    def kept_channels(self) -> dict[str, int]:
        """Channels kept per BatchNorm layer."""
        return {name: len(g.keep) for g in self.groups for name in g.layers}

    @property
    def pruned_fraction(self) -> float:
        """The fraction of the planned BatchNorm channels actually removed (floors can make it < ratio)."""
        total = sum(g.channels * len(g.layers) for g in self.groups)
        return sum(len(g.removed) * len(g.layers) for g in self.groups) / total

    def __str__(self) -> str:
        lines = [f"Network Slimming plan: remove {self.ratio:.0%} of the BatchNorm channels (|gamma| <= "
                 f"{self.threshold:.4g}); removed {self.pruned_fraction:.1%}"]
        width = max(len(", ".join(g.layers)) for g in self.groups)
        for g in self.groups:
            note = "  (floor)" if g.floored else ""
            lines.append(f"  {', '.join(g.layers).ljust(width)}  {len(g.keep):5d} / {g.channels:<5d} kept{note}")
        if self.excluded:
            lines.append(f"  left whole: {', '.join(self.excluded)}")
        return "\n".join(lines)


def validate_ratio(ratio: object) -> float:
    """A pruning ratio must be a number strictly between 0 and 1."""
    return fraction(ratio, "ratio", one=False,
                    expected="the fraction of channels to remove is a number in (0, 1), e.g. 0.4")


def validate_min_channels(min_channels: object) -> int:
    """The per-layer floor must be a whole number of channels, at least 1 (a layer is never emptied)."""
    return whole(min_channels, "min_channels", least=1, expected="keep at least 1 channel in every layer")


def plan(
    model: nn.Module,
    ratio: float = 0.4,
    example_inputs: torch.Tensor | None = None,
    *,
    min_channels: int = 1,
    exclude: tuple[str, ...] | list[str] = (),
    groups: list[ChannelGroup] | None = None,
) -> SlimPlan:
    """Plan which channels to keep, without changing ``model`` (plain or prepared).

    A group's channel is scored by the largest ``|gamma|`` of its coupled BatchNorms (it can go only if
    it is unimportant everywhere); the lowest-scored channels are removed, weighted by how many
    BatchNorms hold them, until ``ratio`` of all BatchNorm channels is reached. Every layer keeps at
    least ``min_channels`` (its best ones). A ratio that needs more than the floors allow is an error.
    Groups with a BatchNorm matching an ``exclude`` pattern are not pruned.
    """
    ratio = validate_ratio(ratio)
    min_channels = validate_min_channels(min_channels)
    groups = channel_groups(model, example_inputs) if groups is None else groups
    whole = [g for g in groups if any(fnmatchcase(name, p) for name in g.names for p in exclude)]
    excluded = tuple(name for g in whole for name in g.names)  # with the layers coupled to them
    candidates = [g for g in groups if g not in whole]
    if not candidates:
        raise ZebraError(f"exclude={list(exclude)!r} leaves no BatchNorm layer to prune")
    scores = [g.gammas().amax(0) for g in candidates]
    weights = torch.cat([torch.full((g.channels,), len(g.names), dtype=torch.float64) for g in candidates])
    flat = torch.cat(scores)
    total = float(weights.sum())
    removable = sum(max(g.channels - min_channels, 0) * len(g.names) for g in candidates)
    if ratio * total > removable:
        raise ZebraError(
            f"ratio={ratio} would empty layers: with at least {min_channels} channel(s) kept in each of the "
            f"{len(candidates)} layer groups, at most {removable / total:.3f} of the channels can be removed; "
            "lower the ratio or min_channels"
        )
    order = torch.argsort(flat, stable=True)
    cumulative = torch.cumsum(weights[order], 0)
    count = int(torch.searchsorted(cumulative, ratio * total - 1e-9)) + 1  # entries removed, in score order
    removed = torch.zeros(len(flat), dtype=torch.bool)
    removed[order[:count]] = True
    threshold = float(flat[order[count - 1]])
    plans, start = [], 0
    for g, score in zip(candidates, scores):
        gone = removed[start:start + g.channels]
        start += g.channels
        keep = (~gone).nonzero().flatten()
        floored = len(keep) < min_channels
        if floored:
            keep = torch.topk(score, min_channels).indices
        plans.append(GroupPlan(g.names, g.channels, tuple(sorted(keep.tolist())), floored))
    return SlimPlan(ratio, threshold, tuple(plans), excluded)
