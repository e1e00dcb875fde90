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

The module reads top-down: the types; the measuring (``Probe`` runs the model under any settings,
``HeldOutCheck`` scores them on held-out images, ``Profile`` keeps both with the curves and every trial);
the curves (``profile``, ``sensitivity``, ``in_context``); the search, which sees the model only through a
``Trial`` it is given (``best_within``, ``bridge``; ``search`` and ``refine`` pass a profile's).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import _defaults as defaults
from .._checks import number, whole
from ..core import BlockSize, TrafficTally, validate_block_size, validate_format
from ..errors import ZebraError
from ..nn import eval_mode, model_device, zebra_layers
from ..nn.suffix import SuffixRun
from .calibrate import calibrate, calibrating, validate_density
from .measure import TrafficReport, layer_traffic, measure

DENSITIES = defaults.DENSITIES
CONFIDENCE = 0.95  # the one-sided level of the margin added to a held-out drop
_Z = NormalDist().inv_cdf(CONFIDENCE)
_CHUNK = 512  # images per forward pass of a held-out check or a BatchNorm re-estimation


# The types.

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


# What the search needs of the model: every layer's setting in, that allocation's top-1 and reduction out (its
# thresholds left empty). ``Profile.trial`` measures it; a test can pass a function of its own.
Trial = Callable[[dict[str, Setting]], Allocation]


# The measuring.

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


def _cloned_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


class HeldOutCheck:
    """Held-out images and the unmasked model's hits on them (``hits``, taken when it is built): ``run`` gives
    the model's hits as it is now, ``margin`` the one-sided margin of a paired top-1 drop."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, quoted_images: int) -> None:
        self.model, self.inputs, self.labels, self.quoted_images = model, inputs, labels, quoted_images
        self.hits = self.run()

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        """Whether the model as it is now gets each held-out image right."""
        with eval_mode(self.model):
            return torch.cat([self.model(chunk).argmax(1) for chunk in self.inputs.split(_CHUNK)]) == self.labels

    def margin(self, hits: torch.Tensor) -> float:
        """``z * sd`` of the paired drop (points): each image's change in hits, over the check images and the
        quoted split alike (the variance of a change in {-1, 0, 1} is at most the discordant fraction)."""
        discordant = (hits != self.hits).float().mean().item()
        quoted = 1 / self.quoted_images if self.quoted_images else 0.0
        return 100 * _Z * math.sqrt(discordant * (1 / len(hits) + quoted))


class Probe:
    """One calibration set, the model's active layers and their own block sizes, and the unmasked model's
    logits and traffic on the set (``logits``, ``report``, taken when it is built). ``set_settings`` puts the
    model under any settings, ``run`` measures it as it is, ``measured`` does both in one pass less, ``point``
    measures one layer's curve point, ``cost`` compares logits with the unmasked ones and ``trial`` measures one
    allocation. The model must be in eval mode while it is used."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, fmt: str, bits: int) -> None:
        self.model, self.inputs, self.labels, self.fmt, self.bits = model, inputs, labels, fmt, bits
        self.renorm = bool(batch_norms(model))  # re-estimate BatchNorm statistics for every setting tried
        self.statistics = [_cloned_state(norm) for norm in batch_norms(model)]  # the trained ones
        self.sites = [site for site, layer in zebra_layers(model) if layer.active]  # in execution order
        self.block_sizes = {site: layer.block_size for site, layer in zebra_layers(model)}  # the model's own
        self.layers = dict(zebra_layers(model))
        self._suffix: SuffixRun | None = None  # ``point``'s last layer
        self.set_settings({})
        self.logits, self.report = self.run()

    def set_settings(self, settings: dict[str, Setting], renorm: bool = True) -> dict[str, float]:
        """The trained BatchNorm statistics, the model's own block sizes and thresholds 0, then the listed
        layers set to their block size and those below density 1 calibrated (in execution order); with
        ``renorm`` (and the probe's) the statistics re-estimated and the thresholds calibrated again."""
        masked = self._reset(settings, renorm)
        return calibrate(self.model, [self.inputs], masked) if masked else {}

    def measured(self, settings: dict[str, Setting]) -> TrafficReport:
        """``set_settings`` and then ``run``'s traffic, in one pass less: the pass that calibrates the thresholds
        last is the measuring pass."""
        masked = self._reset(settings, renorm=True)
        with calibrating(self.model, masked):
            return self.run()[1]

    def point(self, site: str, settings: dict[str, Setting]) -> tuple[torch.Tensor, int]:
        """The logits and ``site``'s bytes with the model under ``settings`` with the trained BatchNorm statistics
        (a curve's point), in one pass that computes only what depends on ``site``: the other values are kept
        from the previous call for ``site`` with the same settings of the layers that do not depend on it."""
        if self._suffix is None or self._suffix.site != site:
            self._suffix = SuffixRun(self.model, site)
        fixed = tuple(settings.get(other) for other in self._suffix.fixed_sites)
        masked = self._reset(settings, renorm=False)
        layer = self.layers[site]
        layer.tally = TrafficTally(layer.block_size, self.bits)
        try:
            with calibrating(self.model, masked):
                logits = self._suffix(self.inputs, state=fixed).detach().float()
            return logits, layer_traffic(layer).bytes[self.fmt]
        finally:
            layer.tally = None

    def _reset(self, settings: dict[str, Setting], renorm: bool) -> dict[str, float]:
        """The trained BatchNorm statistics, the model's own block sizes and thresholds 0, the listed layers at
        their block size; with ``renorm`` (and the probe's) and a layer masked, the thresholds calibrated and the
        statistics re-estimated, ready for the last calibration. The densities of the layers to calibrate."""
        for norm, state in zip(batch_norms(self.model), self.statistics):
            norm.load_state_dict(state)
        for site, layer in zebra_layers(self.model):
            layer.threshold.zero_()
            layer.block_size = settings[site][0] if site in settings else self.block_sizes[site]
        masked = {site: d for site, (_, d) in settings.items() if d < 1.0}
        if masked and renorm and self.renorm:
            calibrate(self.model, [self.inputs], masked)
            reestimate_batchnorm(self.model, self.inputs)
        return masked

    def run(self) -> tuple[torch.Tensor, TrafficReport]:
        """The model's logits and traffic on the calibration images, as it is now."""
        outputs: list[torch.Tensor] = []
        handle = self.model.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().float()))
        try:
            report = measure(self.model, [(self.inputs, self.labels)], bits=self.bits)
        finally:
            handle.remove()
        return torch.cat(outputs), report

    def cost(self, logits: torch.Tensor) -> float:
        """Mean KL divergence of ``logits`` from the unmasked model's, nats per image."""
        reference = F.log_softmax(self.logits, 1)
        return F.kl_div(F.log_softmax(logits, 1), reference, reduction="batchmean", log_target=True).item()

    def trial(self, settings: dict[str, Setting], check: HeldOutCheck | None = None) -> Allocation:
        """The model under ``settings`` (left so): its reduction on the calibration images and its top-1 on
        ``check``'s images with the margin (none: on the calibration images); no thresholds. The layers as the
        model has them need no pass: the probe and the check measured them when they were built."""
        unmasked = all(density == 1.0 and size == self.block_sizes[site] for site, (size, density) in settings.items())
        if unmasked:
            self.set_settings({})
            report = self.report
        else:
            report = self.measured(settings)
        block_sizes = {site: size for site, (size, _) in settings.items()}
        densities = {site: density for site, (_, density) in settings.items()}
        if check is None:
            return Allocation(block_sizes, densities, {}, top1=cast(float, report.accuracy),
                              dense_top1=cast(float, self.report.accuracy),
                              reduction=report.reduction(self.fmt), fmt=self.fmt, check_images=len(self.inputs))
        hits = check.hits if unmasked else check.run()
        return Allocation(block_sizes, densities, {}, top1=hits.float().mean().item(),
                          dense_top1=check.hits.float().mean().item(), reduction=report.reduction(self.fmt),
                          fmt=self.fmt, margin_points=check.margin(hits), check_images=len(hits))


@dataclass
class Profile:
    """The calibration images, the unmasked model's outputs on them (``probe``), every layer's curve and the
    held-out check (the costly part of a search, shared by searches for several budgets), and every setting
    tried so far (``tried``, filled by ``trial``)."""

    probe: Probe
    curves: list[LayerCurve]
    check: HeldOutCheck | None = None
    progress: bool = False
    tried: dict[tuple[Setting, ...], Allocation] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        """The active layers, in execution order."""
        return self.probe.sites

    @property
    def own_block_sizes(self) -> dict[str, BlockSize]:
        """Every layer's block size as the model was prepared."""
        return self.probe.block_sizes

    def unmasked(self) -> dict[str, Setting]:
        """Every active layer as it is: its own block size at density 1."""
        return {site: (self.probe.block_sizes[site], 1.0) for site in self.probe.sites}

    def dense_bytes(self) -> int:
        """The unmasked model's dense traffic over the calibration images."""
        return self.probe.report.total_bytes("dense")

    def trial(self, settings: dict[str, Setting]) -> Allocation:
        """``Probe.trial`` on the profile's check, remembered (bisections for other budgets revisit the same
        settings): the ``Trial`` that ``search`` hands the search."""
        key = tuple(settings[site] for site in self.probe.sites)
        if key not in self.tried:
            self.tried[key] = self.probe.trial(settings, self.check)
        return self.tried[key]


# The curves.

@torch.no_grad()
def profile(model: nn.Module, batches: Iterable[Any], grid: Grid | tuple[float, ...] = Grid(),
            fmt: str = "zebra_zvc", bits: int = 8, *, held_out: Iterable[Any] = (), quoted_images: int = 0,
            progress: bool = False) -> Profile:
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
        probe = Probe(model, inputs, labels, fmt, bits)
        if not probe.sites:
            raise ZebraError("search() found no active Zebra layer: prepare the model with Zebra enabled")
        check_inputs, check_labels = _images(held_out, inputs.device)
        check = HeldOutCheck(model, check_inputs, check_labels, quoted_images) if len(check_inputs) else None
        curves = sensitivity(probe, grid, progress)
        return Profile(probe, curves, check, progress)


def _images(batches: Iterable[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(batches)
    if not batches:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat([b[0] for b in batches]).to(device), torch.cat([b[1] for b in batches]).to(device)


def sensitivity(probe: Probe, grid: Grid = Grid(), progress: bool = False) -> list[LayerCurve]:
    """Every active layer's curve: each setting of ``grid`` alone on that layer, the others unmasked (and the
    trained BatchNorm statistics: one masked layer moves them little, and re-estimating would double the cost).
    The layer as it is (its own block size at density 1, the unmasked model the probe has already measured) is
    always on the curve; another block size at density 1 changes the bytes only."""
    points = {site: _grid_points(probe.block_sizes[site], grid) for site in probe.sites}
    return _curves(probe, points, {}, progress)


def _grid_points(own: BlockSize, grid: Grid) -> list[Setting]:
    """A layer's settings of ``grid``: the layer as it is first, then every density at every block size of the
    grid (none: ``own``), each once."""
    product = itertools.product(grid.block_sizes or (own,), grid.densities)
    return list(dict.fromkeys([(own, 1.0), *product]))


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
    points = {curve.site: list(curve.settings) for curve in measured.curves}
    with eval_mode(probe.model):
        curves = _curves(probe, points, context, measured.progress)
    return dataclasses.replace(measured, curves=curves)


def _curves(probe: Probe, points: dict[str, list[Setting]], context: dict[str, Setting],
            progress: bool) -> list[LayerCurve]:
    """Each listed layer's curve at its ``points``, the other layers at ``context`` (absent there: unmasked);
    the model is left unmasked."""
    desc = "calibrate: layer sensitivity" + (" in context" if _masks_any(context) else "")
    with tqdm(total=sum(map(len, points.values())), desc=desc, disable=not progress, leave=False) as bar:
        curves = [_curve(probe, site, settings, context, bar) for site, settings in points.items()]
    probe.set_settings({})
    return curves


def _curve(probe: Probe, site: str, settings: list[Setting], context: dict[str, Setting], bar: tqdm) -> LayerCurve:
    costs, sizes = [], []
    for setting in settings:
        cost, size = _point(probe, site, setting, context)
        costs.append(cost)
        sizes.append(size)
        bar.update()
    return LayerCurve(site, tuple(settings), tuple(costs), tuple(sizes))


def _point(probe: Probe, site: str, setting: Setting, context: dict[str, Setting]) -> tuple[float, int]:
    """``site``'s cost and bytes at ``setting``, the others at ``context``. With no layer of ``context`` masked,
    density 1 costs nothing and the layer as it is is not run (the probe has measured the unmasked model)."""
    masked = _masks_any(context)
    if not masked and setting == (probe.block_sizes[site], 1.0):
        return 0.0, _layer_bytes(probe.report, site, probe.fmt)
    logits, size = probe.point(site, {**context, site: setting})
    return probe.cost(logits) if masked or setting[1] < 1.0 else 0.0, size


def _masks_any(settings: dict[str, Setting]) -> bool:
    """Whether some layer of ``settings`` keeps fewer than all its blocks."""
    return any(density < 1.0 for _, density in settings.values())


def _layer_bytes(report: TrafficReport, site: str, fmt: str) -> int:
    return next(layer.bytes[fmt] for layer in report.layers if layer.name == site)


# The search.

def allocate(curves: list[LayerCurve], weight: float, dense_bytes: int) -> dict[str, Setting]:
    """Per layer, the (block size, density) minimising ``bytes / dense_bytes + weight * cost`` (ties: the
    higher density, then the earlier setting)."""
    return {curve.site: _cheapest(curve, weight, dense_bytes) for curve in curves}


def _cheapest(curve: LayerCurve, weight: float, dense_bytes: int) -> Setting:
    points = zip(curve.settings, curve.bytes, curve.cost)
    return min(points, key=lambda point: (point[1] / dense_bytes + weight * point[2], -point[0][1]))[0]


@torch.no_grad()
def search(model: nn.Module, batches: Iterable[Any] = (), budget_points: float = 1.0,
           densities: tuple[float, ...] = DENSITIES, fmt: str = "zebra_zvc", bits: int = 8, *, steps: int = 10,
           measured: Profile | list[Profile] | None = None) -> Allocation:
    """Calibrate per-layer thresholds (and block sizes, where the profile tried several) of a prepared model
    for the largest ``fmt`` reduction whose top-1 drop (on the profile's held-out images plus margin, else on
    ``batches``) stays within ``budget_points`` of the unmasked model's; no training. The model keeps the
    chosen settings (and BatchNorm statistics). ``measured`` reuses a ``profile`` of it, or several of one probe
    (``refine``'s): each is searched and the allocation that saves the most is kept."""
    number(budget_points, "budget_points", least=0, expected="use the top-1 points you accept to lose, >= 0")
    measured = measured or profile(model, batches, densities, fmt, bits)
    profiles = [measured] if isinstance(measured, Profile) else measured
    probe = profiles[0].probe
    if any(p.probe is not probe for p in profiles):
        raise ZebraError("search() over several profiles needs them all of one probe (refine's rounds)")
    with eval_mode(model):
        rounds = [dataclasses.replace(_best_of(p, budget_points, steps), round=number)
                  for number, p in enumerate(profiles, 1)]
        best = max(rounds, key=lambda allocation: allocation.reduction)  # ties: the earlier round
        thresholds = probe.set_settings(best.settings)
    return dataclasses.replace(best, thresholds={site: thresholds.get(site, 0.0) for site in probe.sites})


def _best_of(measured: Profile, budget_points: float, steps: int) -> Allocation:
    return best_within(measured.curves, measured.trial, budget_points, measured.unmasked(), measured.dense_bytes(),
                       steps, measured.progress)


def refine(model: nn.Module, measured: Profile, budget_points: float, rounds: int = 2) -> list[Profile]:
    """``measured`` and up to ``rounds - 1`` profiles more, each measured ``in_context`` of the allocation the
    search over the ones before finds for ``budget_points`` (stops early where that allocation masks nothing or
    was a context already); ``search`` over the list keeps the best of them, for this budget or another. The
    model is left unmasked."""
    validate_rounds(rounds)
    profiles: list[Profile] = [measured]
    contexts: list[dict[str, Setting]] = []
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
    whole(rounds, name, least=1, expected="use a positive number of profiles (1: no refinement)")


def best_within(curves: list[LayerCurve], trial: Trial, budget_points: float, start: dict[str, Setting],
                dense_bytes: int, steps: int = 10, progress: bool = False) -> Allocation:
    """Bisection over the Lagrangian weight (log scale) of ``allocate`` on ``curves`` (``dense_bytes``: the
    bytes it divides by) for the allocation of largest reduction whose drop plus margin, as ``trial`` measures
    it, is within ``budget_points``, from ``start`` (the layers as they are, taken when nothing smaller fits);
    then ``bridge`` towards the nearest allocation past the budget."""
    best = trial(start)
    over = None
    low, high = math.log(1e-3), math.log(1e5)
    for _ in tqdm(range(steps), desc=f"calibrate: budget {budget_points:g}", disable=not progress, leave=False):
        middle = (low + high) / 2
        settings = allocate(curves, math.exp(middle), dense_bytes)
        tried = trial(settings)
        if _within(tried, budget_points):
            high = middle  # within budget: try a smaller weight (more sparsity)
            best = tried if tried.reduction > best.reduction else best
        else:
            low, over = middle, settings  # the last one past the budget is the nearest to it
    return bridge(curves, trial, budget_points, best, over) if over else best


def bridge(curves: list[LayerCurve], trial: Trial, budget_points: float, best: Allocation,
           over: dict[str, Setting]) -> Allocation:
    """Between the best allocation within budget and the nearest past it (``over``), the Lagrangian path jumps
    several layers at once: take the layers where they differ one at a time, most bytes saved per cost on
    ``curves`` first, keeping each change whose allocation (``trial``) stays within budget and saves more."""
    start = best.settings
    by_site = {curve.site: curve for curve in curves}
    changed = [site for site in start if start[site] != over[site]]
    for site in sorted(changed, key=lambda s: _saved_per_cost(by_site[s], start[s], over[s]), reverse=True):
        tried = trial({**best.settings, site: over[site]})
        if _within(tried, budget_points) and tried.reduction > best.reduction:
            best = tried
    return best


def _saved_per_cost(curve: LayerCurve, now: Setting, then: Setting) -> float:
    """Bytes saved per unit of cost moving ``curve``'s layer from setting ``now`` to ``then``."""
    points = dict(zip(curve.settings, zip(curve.bytes, curve.cost)))
    (bytes_now, cost_now), (bytes_then, cost_then) = points[now], points[then]
    return (bytes_now - bytes_then) / max(cost_then - cost_now, 1e-12)


def _within(trial: Allocation, budget_points: float) -> bool:
    return trial.drop_points + trial.margin_points <= budget_points + 1e-9
