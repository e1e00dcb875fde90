"""A model's estimate on accelerators, from its topology rows and measured traffic, alone or against a baseline
model's: the layers' work, their costs at the batch, the curves and the warnings about the inputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable

import torch
from torch import nn

from ..analysis.measure import TrafficReport
from ..errors import ZebraError
from ..export import conv_layers
from ..export.scalesim import ConvLayer
from .checks import implausible
from .cost import AcceleratorEstimate, cost_network
from .curves import Pair, model_curves
from .spec import PRESETS, Accelerator, load_accelerators
from .story import energy_story
from .table import estimate_text
from .work import layer_work

Measured = tuple[list[ConvLayer], TrafficReport]  # a model's topology rows and its traffic report


@dataclass(frozen=True)
class Estimate:
    """One network on several accelerators, from one traffic report (and the baseline model's, when compared)."""

    accelerators: dict[str, AcceleratorEstimate]
    images: int
    bits: int
    on_chip: bool
    coverage: float | None = None  # the report's: the fraction of the activation elements its maps count
    baseline_bits: int | None = None  # the baseline's report's bit width; None: no baseline

    def to_dict(self) -> dict[str, Any]:
        """The JSON that ``zebra estimate --json`` writes."""
        return {"images": self.images, "bits": self.bits, "on_chip": self.on_chip, "per": "image",
                "coverage": self.coverage, "baseline_bits": self.baseline_bits,
                "accelerators": {name: est.to_dict() for name, est in self.accelerators.items()}}

    def __str__(self) -> str:
        return estimate_text(self)


def check_batch(batch: int | None) -> None:
    """A ZebraError unless ``batch`` is None (each accelerator's own) or at least 1."""
    if batch is not None and batch < 1:
        raise ZebraError(f"--batch {batch} is invalid: a batch holds at least 1 image")


def warn_if_incomplete(report: TrafficReport, what: str = "the traffic report") -> None:
    """One warning line when ``report`` does not count every activation map (``TrafficReport.complete``)."""
    if report.complete:
        return
    gaps = []
    if report.coverage is not None and report.coverage < 1.0:
        gaps.append(f"counts {report.coverage:.1%} of the activation elements on 4-D maps")
    if report.skipped:
        gaps.append(f"skips call site(s) {', '.join(report.skipped)}")
    warnings.warn(f"{what} {' and '.join(gaps)}: the estimate leaves the uncounted maps' DRAM bytes out, so its "
                  "speed-ups and savings are not the whole model's (docs/ACCELERATORS.md)", stacklevel=3)


def _on_accelerator(spec: Accelerator, model: Measured, baseline: Measured | None, on_chip: bool,
                    batch: int) -> AcceleratorEstimate:
    """One accelerator's estimate of ``model`` (with ``baseline``'s and the curves when given)."""
    (layers, report), keep = model, spec if on_chip else None
    work = layer_work(layers, report, keep)
    for line in implausible(spec, work):
        warnings.warn(line, stacklevel=4)
    result = cost_network(work, spec, report.bits, batch)
    if baseline is None:
        return result
    base_work = layer_work(baseline[0], baseline[1], keep)
    pair = Pair(spec, work, base_work, (report.bits, baseline[1].bits))
    result = replace(result, baseline=cost_network(base_work, spec, baseline[1].bits, batch))
    return replace(result, curves={**model_curves(pair, batch), "energy_story": energy_story(result)})


def estimate_layers(layers: list[ConvLayer], report: TrafficReport,
                    accelerators: Iterable[str | Accelerator] = PRESETS, on_chip: bool = False,
                    batch: int | None = None, baseline: Measured | None = None) -> Estimate:
    """The estimate of topology rows (``export.conv_layers``) whose maps ``report`` measured, on each accelerator
    (a preset name, a YAML path or an ``Accelerator``); ``on_chip`` keeps the maps that fit in its buffers;
    weights are read once per ``batch`` images (None: the accelerator's own ``batch``); ``baseline``: the baseline
    model's rows and report, compared in dense and ZVC. Warns once per incomplete report and per implausible
    setting."""
    check_batch(batch)
    warn_if_incomplete(report)
    if baseline is not None:
        warn_if_incomplete(baseline[1], "the baseline's traffic report")
    results = {spec.name: _on_accelerator(spec, (layers, report), baseline, on_chip, batch or spec.batch)
               for spec in load_accelerators(accelerators)}
    return Estimate(results, report.images, report.bits, on_chip, report.coverage,
                    baseline[1].bits if baseline is not None else None)


def estimate(model: nn.Module, inputs: torch.Tensor, report: TrafficReport,
             accelerators: Iterable[str | Accelerator] = PRESETS, on_chip: bool = False, batch: int | None = None,
             baseline: tuple[nn.Module, TrafficReport] | None = None) -> Estimate:
    """Cycles, stalls and energy of ``model`` (prepared; ``inputs``: a batch of its input, for the layer shapes)
    on each accelerator, from the traffic ``report`` that ``measure`` gave for it; ``baseline``: the baseline model
    and its report, to compare with."""
    base = None if baseline is None else (conv_layers(baseline[0], inputs[:1]), baseline[1])
    return estimate_layers(conv_layers(model, inputs[:1]), report, accelerators, on_chip, batch, base)
