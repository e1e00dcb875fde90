"""Threshold calibration: set each layer's threshold so that it keeps a target fraction of its blocks.

Layers are calibrated in execution order within one forward pass, so every layer sees its inputs as
the already-calibrated layers before it shape them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from .._checks import fraction
from ..nn import eval_mode, model_device, prepared_module, zebra_layers
from ..nn.config import resolve_per_site


def validate_density(value: object, name: str) -> float:
    return fraction(value, name, expected="use the fraction of blocks to keep, in (0, 1]")


def validate_densities(density: object, name: str) -> None:
    """Check a density setting: one fraction in (0, 1] or ``{name-pattern: fraction}``."""
    for pattern, value in (density.items() if isinstance(density, Mapping) else [("*", density)]):
        validate_density(value, f"{name}[{pattern!r}]")


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, density: float | Mapping[str, float]) -> dict[str, float]:
    """Set the threshold of every active layer so it keeps about ``density`` of its blocks on ``batches``.

    ``density`` is one fraction in (0, 1] or ``{name-pattern: fraction}`` (unmatched sites keep theirs).
    Batches are tensors or ``(inputs, labels)``; they are concatenated into one pass in eval mode.
    Returns the new thresholds by site name.
    """
    model = prepared_module(model, "calibrate")  # a torch.compile wrapper's eager module
    parts = [(b[0] if isinstance(b, (list, tuple)) else b) for b in batches]
    if not parts:
        raise ValueError("calibrate() got no batches: give it a non-empty iterable of tensors or (inputs, labels)")
    inputs = torch.cat(parts).to(model_device(model))
    with calibrating(model, density) as thresholds, eval_mode(model):
        model(inputs)
    return thresholds


@contextmanager
def calibrating(model: nn.Module, density: float | Mapping[str, float]) -> Iterator[dict[str, float]]:
    """Within the block, each forward pass sets the threshold of every active layer ``density`` names (as in
    ``calibrate``) from the blocks of that pass, in execution order, and masks with it: the pass that calibrates
    is already the calibrated model's, so a caller that measures in it saves a pass. The dict it yields holds
    the thresholds by site name once the block ends."""
    targets = {}
    for site, layer in zebra_layers(model):
        value = resolve_per_site(density, site, None)
        if value is not None and layer.active:
            targets[site] = validate_density(value, f"density for {site}")
    thresholds: dict[str, float] = {}
    try:
        for site, layer in zebra_layers(model):
            layer.calibration_density = targets.get(site)
        yield thresholds
    finally:
        for _, layer in zebra_layers(model):
            layer.calibration_density = None
    thresholds.update({site: layer.threshold.item() for site, layer in zebra_layers(model) if site in targets})
