"""Per-layer settings of a trained model searched without training, for the largest reduction within a top-1 budget.

``profile`` measures on a few hundred calibration images, one layer at a time, what keeping each fraction of
its blocks costs (the KL divergence of the outputs from the unmasked model's) and what it leaves in bytes.
``allocate`` picks one density per layer that minimises ``bytes / dense bytes + weight * cost`` (a Lagrangian
over the per-layer curves). ``search`` bisects the weight for the allocation that saves the most bytes while
the top-1 drop stays within a budget. Every setting it tries has its thresholds calibrated in execution order,
then (``renorm``) the BatchNorm statistics re-estimated on the masked model with no gradient and the
thresholds calibrated again. With ``held_out`` images the drop is measured on them, paired image by image
with the unmasked model, and raised by a one-sided margin (``CONFIDENCE``) for the noise of those images and
of the split the result is quoted on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .calibrate import calibrate, validate_density
from ..core import validate_format
from ..errors import ZebraError
from .measure import TrafficReport, measure
from ..nn import eval_mode, model_device, zebra_layers

DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
CONFIDENCE = 0.95  # the one-sided level of the margin added to a held-out drop
_Z = NormalDist().inv_cdf(CONFIDENCE)
_CHUNK = 512  # images per forward pass of a held-out check or a BatchNorm re-estimation


@dataclass(frozen=True)
class LayerCurve:
    """One layer's cost and bytes at each density, the other layers unmasked."""

    site: str
    densities: tuple[float, ...]
    cost: tuple[float, ...]  # mean KL(unmasked outputs || outputs), nats per image
    bytes: tuple[int, ...]  # the layer's traffic in the chosen format over the calibration images


@dataclass(frozen=True)
class Allocation:
    """The chosen density and threshold of every active layer, with the top-1 they give on the check images
    (the held-out images, else the calibration images) and the reduction on the calibration images."""

    densities: dict[str, float]
    thresholds: dict[str, float]
    top1: float
    dense_top1: float
    reduction: float  # 1 - bytes(fmt) / dense bytes over every layer
    fmt: str
    margin_points: float = 0.0  # one-sided margin on the drop for the noise of the check and quoted images
    check_images: int = 0

    @property
    def drop_points(self) -> float:
        """Top-1 lost on the check images, in points."""
        return (self.dense_top1 - self.top1) * 100


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over ``inputs`` as the (masked)
    model now computes them: a forward pass, no gradient, no weight changes; other modules stay in eval mode."""
    norms = batch_norms(model)
    momenta = [norm.momentum for norm in norms]
    with eval_mode(model):
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        try:
            for chunk in inputs.split(_CHUNK):
                model(chunk)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum


class _Probe:
    """One calibration set and the unmasked model's logits on it; ``run`` measures any threshold setting."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, fmt: str, bits: int) -> None:
        self.model, self.inputs, self.labels, self.fmt, self.bits = model, inputs, labels, fmt, bits
        self.renorm = bool(batch_norms(model))  # re-estimate BatchNorm statistics for every setting tried
        self.statistics = [{k: v.clone() for k, v in norm.state_dict().items()} for norm in batch_norms(model)]
        self.sites = [site for site, layer in zebra_layers(model) if layer.active]
        self.set_densities({})
        self.logits, self.report = self.run()

    def set_densities(self, densities: dict[str, float], renorm: bool = True) -> dict[str, float]:
        """The trained BatchNorm statistics and thresholds 0, then the listed layers below density 1 calibrated
        (in execution order); with ``renorm`` (and the probe's) the statistics re-estimated and the thresholds
        calibrated again."""
        for norm, state in zip(batch_norms(self.model), self.statistics):
            norm.load_state_dict(state)
        for _, layer in zebra_layers(self.model):
            layer.threshold.zero_()
        masked = {site: d for site, d in densities.items() if d < 1.0}
        if not masked:
            return {}
        thresholds = calibrate(self.model, [self.inputs], masked)
        if renorm and self.renorm:
            reestimate_batchnorm(self.model, self.inputs)
            thresholds = calibrate(self.model, [self.inputs], masked)
        return thresholds

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


class _Check:
    """Held-out images and the unmasked model's hits on them: a setting's paired top-1 drop and its margin."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, quoted_images: int) -> None:
        self.model, self.inputs, self.labels, self.quoted_images = model, inputs, labels, quoted_images
        self.hits = self.run()

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        with eval_mode(self.model):
            return torch.cat([self.model(chunk).argmax(1) for chunk in self.inputs.split(_CHUNK)]) == self.labels

    def margin(self, hits: torch.Tensor) -> float:
        """``z * sd`` of the paired drop (points): each image's change in hits, over the check images and the
        quoted split alike (the variance of a change in {-1, 0, 1} is at most the discordant fraction)."""
        discordant = (hits != self.hits).float().mean().item()
        quoted = 1 / self.quoted_images if self.quoted_images else 0.0
        return 100 * _Z * math.sqrt(discordant * (1 / len(hits) + quoted))


def sensitivity(probe: _Probe, densities: tuple[float, ...] = DENSITIES, progress: bool = False) -> list[LayerCurve]:
    """Every active layer's curve: each density alone on that layer, the others unmasked (and the trained
    BatchNorm statistics: one masked layer moves them little, and re-estimating would double the cost).
    Density 1 is the unmasked model the probe has already measured."""
    curves = []
    masked = [density for density in densities if density < 1.0]
    bar = tqdm(total=len(probe.sites) * len(masked), desc="calibrate: layer sensitivity", disable=not progress,
               leave=False)
    with bar:
        for site in probe.sites:
            points = {1.0: (0.0, _layer_bytes(probe.report, site, probe.fmt))}
            for density in masked:
                probe.set_densities({site: density}, renorm=False)
                logits, report = probe.run()
                points[density] = (probe.cost(logits), _layer_bytes(report, site, probe.fmt))
                bar.update()
            curves.append(LayerCurve(site, tuple(densities), *(tuple(points[d][i] for d in densities) for i in (0, 1))))
    probe.set_densities({})
    return curves


def _layer_bytes(report: TrafficReport, site: str, fmt: str) -> int:
    return next(layer.bytes[fmt] for layer in report.layers if layer.name == site)


def allocate(curves: list[LayerCurve], weight: float, dense_bytes: int) -> dict[str, float]:
    """Per layer, the density minimising ``bytes / dense_bytes + weight * cost``."""
    return {curve.site: min(zip(curve.densities, curve.bytes, curve.cost),
                            key=lambda c: (c[1] / dense_bytes + weight * c[2], -c[0]))[0] for curve in curves}


@dataclass
class Profile:
    """The calibration images, the unmasked model's outputs on them, every layer's curve and the held-out check
    (the costly part of a search, shared by searches for several budgets), and every setting tried so far."""

    probe: _Probe
    curves: list[LayerCurve]
    check: _Check | None = None
    progress: bool = False
    tried: dict[tuple[float, ...], Allocation] = field(default_factory=dict)


def _images(batches, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(batches)
    if not batches:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat([b[0] for b in batches]).to(device), torch.cat([b[1] for b in batches]).to(device)


@torch.no_grad()
def profile(model: nn.Module, batches, densities: tuple[float, ...] = DENSITIES, fmt: str = "zebra_zvc",
            bits: int = 8, *, held_out=(), quoted_images: int = 0, progress: bool = False) -> Profile:
    """Measure every active layer's curve on ``batches`` (``(inputs, labels)``, a few hundred images). With
    ``held_out`` batches, budgets are checked there with a margin that also covers ``quoted_images`` (the
    size of the split the result is quoted on); ``progress`` shows bars here and in ``search``."""
    validate_format(fmt)
    for density in densities:
        validate_density(density, "densities")
    inputs, labels = _images(batches, model_device(model))
    if not len(inputs):
        raise ZebraError("search() needs calibration images: the batches are empty")
    with eval_mode(model):
        probe = _Probe(model, inputs, labels, fmt, bits)
        if not probe.sites:
            raise ZebraError("search() found no active Zebra layer: prepare the model with Zebra enabled")
        check_inputs, check_labels = _images(held_out, inputs.device)
        check = _Check(model, check_inputs, check_labels, quoted_images) if len(check_inputs) else None
        return Profile(probe, sensitivity(probe, tuple(sorted(set(densities) | {1.0})), progress), check, progress)


@torch.no_grad()
def search(model: nn.Module, batches=(), budget_points: float = 1.0, densities: tuple[float, ...] = DENSITIES,
           fmt: str = "zebra_zvc", bits: int = 8, *, steps: int = 10, measured: Profile | None = None) -> Allocation:
    """Calibrate per-layer thresholds of a prepared model for the largest ``fmt`` reduction whose top-1 drop
    (on the profile's held-out images plus margin, else on ``batches``) stays within ``budget_points`` of the
    unmasked model's; no training. The model keeps the chosen thresholds (and BatchNorm statistics).
    ``measured`` reuses a ``profile`` of it."""
    if not budget_points >= 0:
        raise ZebraError(f"budget_points={budget_points!r} is invalid: use the top-1 points you accept to lose, >= 0")
    measured = measured or profile(model, batches, densities, fmt, bits)
    with eval_mode(model):
        best = _best_weight(measured, budget_points, steps)
        thresholds = measured.probe.set_densities(best.densities)
    return Allocation(best.densities, {s: thresholds.get(s, 0.0) for s in measured.probe.sites}, best.top1,
                      best.dense_top1, best.reduction, best.fmt, best.margin_points, best.check_images)


def _trial(measured: Profile, densities: dict[str, float]) -> Allocation:
    """The model under ``densities`` (remembered: bisections for other budgets revisit the same settings)."""
    key = tuple(densities[site] for site in measured.probe.sites)
    if key not in measured.tried:
        probe, check = measured.probe, measured.check
        probe.set_densities(densities)
        _, report = probe.run()
        if check is None:
            trial = Allocation(densities, {}, report.accuracy, probe.report.accuracy, report.reduction(probe.fmt),
                               probe.fmt, 0.0, len(probe.inputs))
        else:
            hits = check.run()
            trial = Allocation(densities, {}, hits.float().mean().item(), check.hits.float().mean().item(),
                               report.reduction(probe.fmt), probe.fmt, check.margin(hits), len(hits))
        measured.tried[key] = trial
    return measured.tried[key]


def _best_weight(measured: Profile, budget_points: float, steps: int) -> Allocation:
    """Bisection over the Lagrangian weight (log scale): the allocation of largest joint reduction whose drop
    plus margin is within budget."""
    dense_bytes = measured.probe.report.total_bytes("dense")
    best = _trial(measured, {site: 1.0 for site in measured.probe.sites})
    low, high = math.log(1e-3), math.log(1e5)
    for _ in tqdm(range(steps), desc=f"calibrate: budget {budget_points:g}", disable=not measured.progress,
                  leave=False):
        middle = (low + high) / 2
        trial = _trial(measured, allocate(measured.curves, math.exp(middle), dense_bytes))
        if trial.drop_points + trial.margin_points <= budget_points + 1e-9:
            high = middle  # within budget: try a smaller weight (more sparsity)
            best = trial if trial.reduction > best.reduction else best
        else:
            low = middle
    return best
