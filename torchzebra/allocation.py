"""Per-layer density allocation by bytes and sensitivity, and a threshold search that needs no training.

``sensitivity`` measures on a few calibration images, one layer at a time, what keeping each fraction of
its blocks costs (the KL divergence of the outputs from the unmasked model's) and what it leaves in bytes.
``allocate`` picks one density per layer that minimises ``bytes / dense bytes + weight * cost`` (a Lagrangian
over the per-layer curves). ``search`` finds the weight whose joint allocation saves the most bytes while the
calibration images' top-1 stays within a budget, and leaves the model calibrated to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .calibrate import calibrate, validate_density
from .core import validate_format
from .measure import TrafficReport, measure
from .nn import eval_mode, model_device, zebra_layers

DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class LayerCurve:
    """One layer's cost and bytes at each density, the other layers unmasked."""

    site: str
    densities: tuple[float, ...]
    cost: tuple[float, ...]  # mean KL(unmasked outputs || outputs), nats per image
    bytes: tuple[int, ...]  # the layer's traffic in the chosen format over the calibration images


@dataclass(frozen=True)
class Allocation:
    """The chosen density and threshold of every active layer, with what they give on the calibration images."""

    densities: dict[str, float]
    thresholds: dict[str, float]
    top1: float
    dense_top1: float
    reduction: float  # 1 - bytes(fmt) / dense bytes over every layer
    fmt: str

    @property
    def drop_points(self) -> float:
        """Top-1 lost on the calibration images, in points."""
        return (self.dense_top1 - self.top1) * 100


class _Probe:
    """One calibration set and the unmasked model's logits on it; ``run`` measures any threshold setting."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, fmt: str, bits: int) -> None:
        self.model, self.inputs, self.labels, self.fmt, self.bits = model, inputs, labels, fmt, bits
        self.sites = [site for site, layer in zebra_layers(model) if layer.active]
        self.set_densities({})
        self.logits, self.report = self.run()

    def set_densities(self, densities: dict[str, float]) -> dict[str, float]:
        """Thresholds 0 for unlisted layers and density 1, calibrated ones (in execution order) for the rest."""
        for _, layer in zebra_layers(self.model):
            layer.threshold.zero_()
        masked = {site: d for site, d in densities.items() if d < 1.0}
        return calibrate(self.model, [self.inputs], masked) if masked else {}

    def run(self) -> tuple[torch.Tensor, TrafficReport]:
        outputs: list[torch.Tensor] = []
        handle = self.model.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().float()))
        try:
            report = measure(self.model, [(self.inputs, self.labels)], bits=self.bits)
        finally:
            handle.remove()
        return torch.cat(outputs), report

    def cost(self, logits: torch.Tensor) -> float:
        reference = F.log_softmax(self.logits, 1)
        return F.kl_div(F.log_softmax(logits, 1), reference, reduction="batchmean", log_target=True).item()


def sensitivity(probe: _Probe, densities: tuple[float, ...] = DENSITIES) -> list[LayerCurve]:
    """Every active layer's curve: each density alone on that layer, the others unmasked."""
    curves = []
    for site in probe.sites:
        costs, sizes = [], []
        for density in densities:
            probe.set_densities({site: density})
            logits, report = probe.run()
            costs.append(probe.cost(logits))
            sizes.append(next(layer.bytes[probe.fmt] for layer in report.layers if layer.name == site))
        curves.append(LayerCurve(site, tuple(densities), tuple(costs), tuple(sizes)))
    probe.set_densities({})
    return curves


def allocate(curves: list[LayerCurve], weight: float, dense_bytes: int) -> dict[str, float]:
    """Per layer, the density minimising ``bytes / dense_bytes + weight * cost``."""
    return {curve.site: min(zip(curve.densities, curve.bytes, curve.cost),
                            key=lambda c: (c[1] / dense_bytes + weight * c[2], -c[0]))[0] for curve in curves}


@dataclass
class Profile:
    """The calibration images, the unmasked model's outputs on them and every layer's curve (the costly part
    of a search, shared by searches for several budgets)."""

    probe: _Probe
    curves: list[LayerCurve]


@torch.no_grad()
def profile(model: nn.Module, batches, densities: tuple[float, ...] = DENSITIES, fmt: str = "zebra_zvc",
            bits: int = 8) -> Profile:
    """Measure every active layer's curve on ``batches`` (``(inputs, labels)``, a few hundred images)."""
    validate_format(fmt)
    for density in densities:
        validate_density(density, "densities")
    inputs = torch.cat([b[0] for b in batches]).to(model_device(model))
    labels = torch.cat([b[1] for b in batches]).to(inputs.device)
    if not len(inputs):
        raise ValueError("search() needs calibration images: the batches are empty")
    with eval_mode(model):
        probe = _Probe(model, inputs, labels, fmt, bits)
        if not probe.sites:
            raise ValueError("search() found no active Zebra layer: prepare the model with Zebra enabled")
        return Profile(probe, sensitivity(probe, tuple(sorted(set(densities) | {1.0}))))


@torch.no_grad()
def search(model: nn.Module, batches=(), budget_points: float = 1.0, densities: tuple[float, ...] = DENSITIES,
           fmt: str = "zebra_zvc", bits: int = 8, *, steps: int = 14, measured: Profile | None = None) -> Allocation:
    """Calibrate per-layer thresholds of a prepared model for the largest ``fmt`` reduction whose top-1 on
    ``batches`` (``(inputs, labels)``, a few hundred images) stays within ``budget_points`` of the unmasked
    model's; no training. The model keeps the chosen thresholds. ``measured`` reuses a ``profile`` of it."""
    if not budget_points >= 0:
        raise ValueError(f"budget_points={budget_points!r} is invalid: use the top-1 points you accept to lose, >= 0")
    measured = measured or profile(model, batches, densities, fmt, bits)
    with eval_mode(model):
        best = _best_weight(measured.probe, measured.curves, budget_points, steps)
        thresholds = measured.probe.set_densities(best.densities)
    return Allocation(best.densities, {s: thresholds.get(s, 0.0) for s in measured.probe.sites}, best.top1,
                      best.dense_top1, best.reduction, best.fmt)


def _best_weight(probe: _Probe, curves: list[LayerCurve], budget_points: float, steps: int) -> Allocation:
    """Bisection over the Lagrangian weight (log scale): the allocation of largest joint reduction within budget."""
    dense_bytes = probe.report.total_bytes("dense")
    dense_top1 = probe.report.accuracy
    low, high = math.log(1e-3), math.log(1e5)
    best = Allocation({c.site: 1.0 for c in curves}, {}, dense_top1, dense_top1, probe.report.reduction(probe.fmt),
                      probe.fmt)
    for _ in range(steps):
        middle = (low + high) / 2
        densities = allocate(curves, math.exp(middle), dense_bytes)
        probe.set_densities(densities)
        _, report = probe.run()
        trial = Allocation(densities, {}, report.accuracy, dense_top1, report.reduction(probe.fmt), probe.fmt)
        if trial.drop_points <= budget_points + 1e-9:
            high = middle  # within budget: try a smaller weight (more sparsity)
            best = trial if trial.reduction > best.reduction else best
        else:
            low = middle
    return best
