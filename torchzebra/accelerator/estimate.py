"""What measured bytes buy on an accelerator: per-layer compute, memory and stall cycles and energy.

Per conv/linear layer and format: compute cycles from SCALE-Sim's analytical runtime (``systolic``); DRAM
bytes = the layer's share of the measured activation traffic per image (``work``) + its weights read once;
memory cycles = bytes / (DRAM bytes per cycle), rounded up; with double buffering a layer takes
``max(compute, memory)`` cycles (the stall is what memory adds), without overlap ``compute + memory``.
Energy = DRAM bits x pJ/bit + MACs x pJ/MAC. The network's figures are the layers' sums (layers run one
after another); speed-up and savings compare each format with dense on the same accelerator.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import torch
from torch import nn

from ..core import FORMATS
from ..export import conv_layers
from ..export.scalesim import ConvLayer
from ..analysis.measure import TrafficReport
from .spec import PRESETS, Accelerator, load_accelerators
from .systolic import compute_cycles
from .work import LayerWork, layer_work

PJ_PER_UJ = 1e6


@dataclass(frozen=True)
class Cost:
    """Cycles, DRAM bytes and energy of one layer, or of the whole network, in one format."""

    compute_cycles: int
    memory_cycles: int
    cycles: int  # double-buffered: max(compute, memory) per layer
    serial_cycles: int  # no overlap: compute + memory per layer
    dram_bytes: int
    dram_energy_uj: float
    mac_energy_uj: float

    @property
    def stall_cycles(self) -> int:
        """Cycles the array waits for DRAM."""
        return self.cycles - self.compute_cycles

    @property
    def energy_uj(self) -> float:
        """DRAM and MAC energy."""
        return self.dram_energy_uj + self.mac_energy_uj

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Cost)))

    def to_dict(self) -> dict[str, Any]:
        """Every field plus the stall cycles and the total energy."""
        return {**asdict(self), "stall_cycles": self.stall_cycles, "energy_uj": self.energy_uj}


@dataclass(frozen=True)
class LayerEstimate:
    """One layer on one accelerator: its MACs, compute cycles, weight bytes and cost in every format."""

    name: str
    macs: int
    compute_cycles: int
    weight_bytes: int
    formats: dict[str, Cost]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "macs": self.macs, "compute_cycles": self.compute_cycles,
                "weight_bytes": self.weight_bytes, "formats": {fmt: c.to_dict() for fmt, c in self.formats.items()}}


def layer_cost(work: LayerWork, accelerator: Accelerator, bits: int) -> LayerEstimate:
    """The cycles and energy of one layer in every format (weights at ``accelerator.weight_bits`` or ``bits``)."""
    weight_bytes = math.ceil(work.gemm.weights * (accelerator.weight_bits or bits) / 8)
    compute = compute_cycles(work.gemm, accelerator.rows, accelerator.cols, accelerator.dataflow)
    mac_energy = work.gemm.macs * accelerator.pj_per_mac / PJ_PER_UJ
    costs = {}
    for fmt in FORMATS:
        dram = weight_bytes + math.ceil(work.activation_bytes[fmt])
        memory = math.ceil(dram / accelerator.bytes_per_cycle)
        costs[fmt] = Cost(compute, memory, max(compute, memory), compute + memory, dram,
                          dram * 8 * accelerator.pj_per_dram_bit / PJ_PER_UJ, mac_energy)
    return LayerEstimate(work.name, work.gemm.macs, compute, weight_bytes, costs)


@dataclass(frozen=True)
class AcceleratorEstimate:
    """A network's layers on one accelerator, per inference of one image (the mean over the measured images)."""

    accelerator: Accelerator
    layers: list[LayerEstimate]

    def total(self, fmt: str) -> Cost:
        """The network's cost in ``fmt``: the layers' sums."""
        return sum((layer.formats[fmt] for layer in self.layers[1:]), self.layers[0].formats[fmt])

    def speedup(self, fmt: str) -> float:
        """Dense cycles / ``fmt`` cycles."""
        return self.total("dense").cycles / self.total(fmt).cycles

    def saving(self, fmt: str, energy: str = "energy_uj") -> float:
        """``1 - energy(fmt) / energy(dense)`` (``energy``: ``energy_uj`` or ``dram_energy_uj``)."""
        dense = getattr(self.total("dense"), energy)
        return 1.0 - getattr(self.total(fmt), energy) / dense if dense else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Totals per format (with speed-up and savings against dense) and every layer."""
        formats = {fmt: {**self.total(fmt).to_dict(), "speedup": self.speedup(fmt),
                         "energy_saving": self.saving(fmt), "dram_energy_saving": self.saving(fmt, "dram_energy_uj")}
                   for fmt in FORMATS}
        return {"accelerator": self.accelerator.to_dict(), "formats": formats,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Estimate:
    """One network on several accelerators, from one traffic report."""

    accelerators: dict[str, AcceleratorEstimate]
    images: int
    bits: int
    on_chip: bool
    coverage: float | None = None  # the report's: the fraction of the activation elements its maps count

    def to_dict(self) -> dict[str, Any]:
        """The JSON that ``zebra estimate --json`` writes."""
        return {"images": self.images, "bits": self.bits, "on_chip": self.on_chip, "per": "image",
                "coverage": self.coverage,
                "accelerators": {name: est.to_dict() for name, est in self.accelerators.items()}}

    def __str__(self) -> str:
        from .table import estimate_text

        return estimate_text(self)


def estimate_layers(layers: list[ConvLayer], report: TrafficReport,
                    accelerators: Iterable[str | Accelerator] = PRESETS, on_chip: bool = False) -> Estimate:
    """The estimate of topology rows (``export.conv_layers``) whose maps ``report`` measured, on each accelerator
    (a preset name, a YAML path or an ``Accelerator``); ``on_chip`` keeps the maps that fit in its buffers.
    Warns once when the report left some activation maps uncounted: their bytes are not in the estimate."""
    warn_if_incomplete(report)
    results = {}
    for spec in load_accelerators(accelerators):
        work = layer_work(layers, report, spec if on_chip else None)
        results[spec.name] = AcceleratorEstimate(spec, [layer_cost(w, spec, report.bits) for w in work])
    return Estimate(results, report.images, report.bits, on_chip, report.coverage)


def warn_if_incomplete(report: TrafficReport) -> None:
    """One warning line when ``report`` does not count every activation map (``TrafficReport.complete``)."""
    if report.complete:
        return
    gaps = []
    if report.coverage is not None and report.coverage < 1.0:
        gaps.append(f"counts {report.coverage:.1%} of the activation elements on 4-D maps")
    if report.skipped:
        gaps.append(f"skips call site(s) {', '.join(report.skipped)}")
    warnings.warn(f"the traffic report {' and '.join(gaps)}: the estimate leaves the uncounted maps' DRAM bytes out, "
                  "so its speed-ups and savings are not the whole model's (docs/ACCELERATORS.md)", stacklevel=3)


def estimate(model: nn.Module, inputs: torch.Tensor, report: TrafficReport,
             accelerators: Iterable[str | Accelerator] = PRESETS, on_chip: bool = False) -> Estimate:
    """Cycles, stalls and energy of ``model`` (prepared; ``inputs``: a batch of its input, for the layer shapes)
    on each accelerator, from the traffic ``report`` that ``measure`` gave for it."""
    return estimate_layers(conv_layers(model, inputs[:1]), report, accelerators, on_chip)
