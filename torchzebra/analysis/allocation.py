"""Per-layer settings of a trained model searched without training, for the largest reduction within a top-1 budget.

``profile`` measures on a few hundred calibration images, one layer at a time, what keeping each fraction of
its blocks, at each block size tried, costs (the KL divergence of the outputs from the unmasked model's) and
what it leaves in bytes. ``allocate`` picks one (block size, density) per layer that minimises ``bytes / dense
bytes + weight * cost`` (a Lagrangian over the per-layer curves). ``search`` bisects the weight for the
allocation that saves the most bytes while the top-1 drop stays within a budget, then bridges the jump of the
Lagrangian path from there to the nearest allocation past the budget one layer at a time. ``refine`` measures
the curves again with the other layers at the allocation found (``in_context``), where masked layers no longer
cost what they cost alone, and ``search`` over every round keeps the best. Every setting it tries has its thresholds
calibrated in execution order, then (``renorm``) the BatchNorm statistics re-estimated on the masked model
with no gradient and the thresholds calibrated again. With ``held_out`` images the drop is measured on them,
paired image by image with the unmasked model, and raised by a one-sided margin (``CONFIDENCE``) for the noise
of those images and of the split the result is quoted on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .calibrate import calibrate, validate_density
from ..core import BlockSize, validate_block_size, validate_format
from ..errors import ZebraError
from .measure import TrafficReport, measure
from ..nn import eval_mode, model_device, zebra_layers

DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
CONFIDENCE = 0.95  # the one-sided level of the margin added to a held-out drop
_Z = NormalDist().inv_cdf(CONFIDENCE)
_CHUNK = 512  # images per forward pass of a held-out check or a BatchNorm re-estimation


Setting = tuple[BlockSize, float]  # one layer's (block size, kept-block density)


@dataclass(frozen=True)
class Grid:
    """The settings each layer's curve is measured at: every density at every block size (none: the layer's own)."""

    densities: tuple[float, ...] = DENSITIES
    block_sizes: tuple[BlockSize, ...] = ()

    def __post_init__(self) -> None:
        for density in self.densities:
            validate_density(density, "densities")
        sizes = tuple(dict.fromkeys(validate_block_size(size, "block_sizes") for size in self.block_sizes))
        object.__setattr__(self, "densities", tuple(sorted(set(self.densities) | {1.0})))
        object.__setattr__(self, "block_sizes", sizes)


@dataclass(frozen=True)
class LayerCurve:
    """One layer's cost and bytes at each (block size, density) setting, the other layers unmasked (or at the
    allocation of an ``in_context`` profile)."""

    site: str
    settings: tuple[Setting, ...]
    cost: tuple[float, ...]  # mean KL(unmasked outputs || outputs), nats per image
    bytes: tuple[int, ...]  # the layer's traffic in the chosen format over the calibration images


@dataclass(frozen=True)
class Allocation:
    """The chosen block size, density and threshold of every active layer, with the top-1 they give on the
    check images (the held-out images, else the calibration images) and the reduction on the calibration images."""

    block_sizes: dict[str, BlockSize]
    densities: dict[str, float]
    thresholds: dict[str, float]
    top1: float
    dense_top1: float
    reduction: float  # 1 - bytes(fmt) / dense bytes over every layer
    fmt: str
    margin_points: float = 0.0  # one-sided margin on the drop for the noise of the check and quoted images
    check_images: int = 0
    round: int = 1  # the profile (of ``refine``'s list) whose curves found it

    @property
    def settings(self) -> dict[str, Setting]:
        """Every layer's (block size, density)."""
        return {site: (self.block_sizes[site], density) for site, density in self.densities.items()}

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
        self.block_sizes = {site: layer.block_size for site, layer in zebra_layers(model)}  # the model's own
        self.set_settings({})
        self.logits, self.report = self.run()

    def set_settings(self, settings: dict[str, Setting], renorm: bool = True) -> dict[str, float]:
        """The trained BatchNorm statistics, the model's own block sizes and thresholds 0, then the listed
        layers set to their block size and those below density 1 calibrated (in execution order); with
        ``renorm`` (and the probe's) the statistics re-estimated and the thresholds calibrated again."""
        for norm, state in zip(batch_norms(self.model), self.statistics):
            norm.load_state_dict(state)
        for site, layer in zebra_layers(self.model):
            layer.threshold.zero_()
            layer.block_size = settings[site][0] if site in settings else self.block_sizes[site]
        masked = {site: d for site, (_, d) in settings.items() if d < 1.0}
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


def sensitivity(probe: _Probe, grid: Grid = Grid(), progress: bool = False) -> list[LayerCurve]:
    """Every active layer's curve: each setting of ``grid`` alone on that layer, the others unmasked (and the
    trained BatchNorm statistics: one masked layer moves them little, and re-estimating would double the cost).
    The layer as it is (its own block size at density 1, the unmasked model the probe has already measured) is
    always on the curve; another block size at density 1 changes the bytes only."""
    settings = [(size, density) for size in grid.block_sizes or (None,) for density in grid.densities]
    return _curves(probe, {site: list(dict.fromkeys([(probe.block_sizes[site], 1.0)] + [
        (probe.block_sizes[site] if size is None else size, density) for size, density in settings]))
        for site in probe.sites}, {}, progress)


def _curves(probe: _Probe, settings: dict[str, list[Setting]], context: dict[str, Setting],
            progress: bool) -> list[LayerCurve]:
    """Each listed layer's cost and bytes at each of its settings, the other layers at ``context`` (absent there:
    unmasked). With no layer of ``context`` masked, density 1 costs nothing and the layer as it is is not run."""
    masked = _masks_any(context)
    desc = "calibrate: layer sensitivity" + (" in context" if masked else "")
    bar = tqdm(total=sum(map(len, settings.values())), desc=desc, disable=not progress, leave=False)
    curves = []
    with bar:
        for site, points in settings.items():
            measured = []
            for setting in points:
                if not masked and setting == (probe.block_sizes[site], 1.0):
                    measured.append((0.0, _layer_bytes(probe.report, site, probe.fmt)))
                else:
                    probe.set_settings({**context, site: setting}, renorm=False)
                    logits, report = probe.run()
                    measured.append((probe.cost(logits) if masked or setting[1] < 1.0 else 0.0,
                                     _layer_bytes(report, site, probe.fmt)))
                bar.update()
            curves.append(LayerCurve(site, tuple(points), *(tuple(m[i] for m in measured) for i in (0, 1))))
    probe.set_settings({})
    return curves


@torch.no_grad()
def in_context(measured: Profile, context: dict[str, Setting]) -> Profile:
    """``measured`` with every layer's curve measured again with the other layers at ``context`` (an allocation):
    layers masked together cost more than the sum of their costs alone, and unevenly. As in ``sensitivity``,
    the trained BatchNorm statistics are kept (re-estimating for every point would double the cost; the search
    checks every allocation with them re-estimated). The check and the settings tried are shared; a ``context``
    that masks nothing returns ``measured``."""
    if not _masks_any(context):
        return measured
    probe = measured.probe
    with eval_mode(probe.model):
        curves = _curves(probe, {curve.site: list(curve.settings) for curve in measured.curves}, context,
                         measured.progress)
    return dataclasses.replace(measured, curves=curves)


def _masks_any(settings: dict[str, Setting]) -> bool:
    """Whether some layer of ``settings`` keeps fewer than all its blocks."""
    return any(density < 1.0 for _, density in settings.values())


def _layer_bytes(report: TrafficReport, site: str, fmt: str) -> int:
    return next(layer.bytes[fmt] for layer in report.layers if layer.name == site)


def allocate(curves: list[LayerCurve], weight: float, dense_bytes: int) -> dict[str, Setting]:
    """Per layer, the (block size, density) minimising ``bytes / dense_bytes + weight * cost`` (ties: the
    higher density, then the earlier setting)."""
    return {curve.site: min(zip(curve.settings, curve.bytes, curve.cost),
                            key=lambda c: (c[1] / dense_bytes + weight * c[2], -c[0][1]))[0] for curve in curves}


@dataclass
class Profile:
    """The calibration images, the unmasked model's outputs on them, every layer's curve and the held-out check
    (the costly part of a search, shared by searches for several budgets), and every setting tried so far."""

    probe: _Probe
    curves: list[LayerCurve]
    check: _Check | None = None
    progress: bool = False
    tried: dict[tuple[Setting, ...], Allocation] = field(default_factory=dict)


def _images(batches, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(batches)
    if not batches:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat([b[0] for b in batches]).to(device), torch.cat([b[1] for b in batches]).to(device)


@torch.no_grad()
def profile(model: nn.Module, batches, grid: Grid | tuple[float, ...] = Grid(), fmt: str = "zebra_zvc",
            bits: int = 8, *, held_out=(), quoted_images: int = 0, progress: bool = False) -> Profile:
    """Measure every active layer's curve on ``batches`` (``(inputs, labels)``, a few hundred images) at the
    settings of ``grid`` (a tuple of densities: at each layer's own block size). With ``held_out`` batches,
    budgets are checked there with a margin that also covers ``quoted_images`` (the size of the split the result
    is quoted on); ``progress`` shows bars here and in ``search``."""
    validate_format(fmt)
    grid = grid if isinstance(grid, Grid) else Grid(tuple(grid))
    inputs, labels = _images(batches, model_device(model))
    if not len(inputs):
        raise ZebraError("search() needs calibration images: the batches are empty")
    with eval_mode(model):
        probe = _Probe(model, inputs, labels, fmt, bits)
        if not probe.sites:
            raise ZebraError("search() found no active Zebra layer: prepare the model with Zebra enabled")
        check_inputs, check_labels = _images(held_out, inputs.device)
        check = _Check(model, check_inputs, check_labels, quoted_images) if len(check_inputs) else None
        curves = sensitivity(probe, grid, progress)
        return Profile(probe, curves, check, progress)


@torch.no_grad()
def search(model: nn.Module, batches=(), budget_points: float = 1.0, densities: tuple[float, ...] = DENSITIES,
           fmt: str = "zebra_zvc", bits: int = 8, *, steps: int = 10,
           measured: Profile | list[Profile] | None = None) -> Allocation:
    """Calibrate per-layer thresholds (and block sizes, where the profile tried several) of a prepared model
    for the largest ``fmt`` reduction whose top-1 drop (on the profile's held-out images plus margin, else on
    ``batches``) stays within ``budget_points`` of the unmasked model's; no training. The model keeps the
    chosen settings (and BatchNorm statistics). ``measured`` reuses a ``profile`` of it, or several of one probe
    (``refine``'s): each is searched and the allocation that saves the most is kept."""
    if not budget_points >= 0:
        raise ZebraError(f"budget_points={budget_points!r} is invalid: use the top-1 points you accept to lose, >= 0")
    measured = measured or profile(model, batches, densities, fmt, bits)
    profiles = [measured] if isinstance(measured, Profile) else measured
    if any(p.probe is not profiles[0].probe for p in profiles):
        raise ZebraError("search() over several profiles needs them all of one probe (refine's rounds)")
    with eval_mode(model):
        best = max((dataclasses.replace(_best_weight(p, budget_points, steps), round=number)
                    for number, p in enumerate(profiles, 1)), key=lambda a: a.reduction)
        thresholds = profiles[0].probe.set_settings(best.settings)
    return dataclasses.replace(best, thresholds={s: thresholds.get(s, 0.0) for s in profiles[0].probe.sites})


def refine(model: nn.Module, measured: Profile, budget_points: float, rounds: int = 2) -> list[Profile]:
    """``measured`` and up to ``rounds - 1`` profiles more, each measured ``in_context`` of the allocation the
    search over the ones before finds for ``budget_points`` (stops early where that allocation masks nothing or
    was a context already); ``search`` over the list keeps the best of them, for this budget or another. The
    model is left unmasked."""
    validate_rounds(rounds)
    profiles, contexts = [measured], []
    while len(profiles) < rounds:
        context = search(model, budget_points=budget_points, measured=profiles).settings
        if context in contexts or not _masks_any(context):
            break
        contexts.append(context)
        profiles.append(in_context(profiles[-1], context))
    measured.probe.set_settings({})
    return profiles


def validate_rounds(rounds: int, name: str = "rounds") -> None:
    """Refuse a number of profile rounds that is not a positive integer."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"{name}={rounds!r} is invalid: use a positive number of profiles (1: no refinement)")


def _trial(measured: Profile, settings: dict[str, Setting]) -> Allocation:
    """The model under ``settings`` (remembered: bisections for other budgets revisit the same settings)."""
    key = tuple(settings[site] for site in measured.probe.sites)
    if key not in measured.tried:
        probe, check = measured.probe, measured.check
        probe.set_settings(settings)
        _, report = probe.run()
        chosen = {"block_sizes": {site: size for site, (size, _) in settings.items()},
                  "densities": {site: density for site, (_, density) in settings.items()}, "thresholds": {}}
        if check is None:
            trial = Allocation(**chosen, top1=report.accuracy, dense_top1=probe.report.accuracy,
                               reduction=report.reduction(probe.fmt), fmt=probe.fmt, check_images=len(probe.inputs))
        else:
            hits = check.run()
            trial = Allocation(**chosen, top1=hits.float().mean().item(), dense_top1=check.hits.float().mean().item(),
                               reduction=report.reduction(probe.fmt), fmt=probe.fmt, margin_points=check.margin(hits),
                               check_images=len(hits))
        measured.tried[key] = trial
    return measured.tried[key]


def _within(trial: Allocation, budget_points: float) -> bool:
    return trial.drop_points + trial.margin_points <= budget_points + 1e-9


def _best_weight(measured: Profile, budget_points: float, steps: int) -> Allocation:
    """Bisection over the Lagrangian weight (log scale) for the allocation of largest joint reduction whose drop
    plus margin is within budget, then ``_bridge`` towards the nearest allocation past the budget."""
    dense_bytes = measured.probe.report.total_bytes("dense")
    best = _trial(measured, {site: (measured.probe.block_sizes[site], 1.0) for site in measured.probe.sites})
    over = None
    low, high = math.log(1e-3), math.log(1e5)
    for _ in tqdm(range(steps), desc=f"calibrate: budget {budget_points:g}", disable=not measured.progress,
                  leave=False):
        middle = (low + high) / 2
        settings = allocate(measured.curves, math.exp(middle), dense_bytes)
        trial = _trial(measured, settings)
        if _within(trial, budget_points):
            high = middle  # within budget: try a smaller weight (more sparsity)
            best = trial if trial.reduction > best.reduction else best
        else:
            low, over = middle, settings  # the last one past the budget is the nearest to it
    return _bridge(measured, budget_points, best, over) if over else best


def _bridge(measured: Profile, budget_points: float, best: Allocation, over: dict[str, Setting]) -> Allocation:
    """Between the best allocation within budget and the nearest past it, the Lagrangian path jumps several
    layers at once: take the layers where they differ one at a time, most bytes saved per cost first, keeping
    each change whose allocation stays within budget and saves more."""
    curves = {curve.site: dict(zip(curve.settings, zip(curve.bytes, curve.cost))) for curve in measured.curves}
    start = best.settings

    def value(site: str) -> float:
        (bytes_now, cost_now), (bytes_then, cost_then) = curves[site][start[site]], curves[site][over[site]]
        return (bytes_now - bytes_then) / max(cost_then - cost_now, 1e-12)

    for site in sorted((s for s in start if start[s] != over[s]), key=value, reverse=True):
        trial = _trial(measured, {**best.settings, site: over[site]})
        if _within(trial, budget_points) and trial.reduction > best.reduction:
            best = trial
    return best
