"""What measured bytes buy on an accelerator: per-layer compute, memory and stall cycles and energy.

Per conv/linear layer and format, for a batch of ``batch`` images: compute cycles from SCALE-Sim's analytical
runtime (``systolic``), once per image; DRAM bytes = the layer's share of the measured activation traffic per image
(``work``) for each image + its weights, read once per batch; memory cycles = bytes / (DRAM bytes per cycle),
rounded up; with double buffering a layer takes ``max(compute, memory)`` cycles (the stall is what memory adds),
without overlap ``compute + memory``. Energy = DRAM bits x pJ/bit + MACs x pJ/MAC. Every figure is then divided
by the batch: per image. The network's figures are the layers' sums (layers run one after another); speed-up and
savings compare a format with a reference cost: the same model's dense, or a baseline model's dense or ZVC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..core import FORMATS
from .spec import Accelerator
from .systolic import compute_cycles
from .work import LayerWork

PJ_PER_UJ = 1e6
SAVINGS = {"energy_uj": "energy_saving", "dram_energy_uj": "dram_energy_saving"}  # energy -> its saving's key
BASELINE_FORMATS = ("dense", "zvc")  # the baseline model's formats: stored as is, and as hardware compresses zeros


@dataclass(frozen=True)
class Cost:
    """Cycles, DRAM bytes and energy per image of one layer, or of the whole network, in one format."""

    compute_cycles: float
    memory_cycles: float
    cycles: float  # double-buffered: max(compute, memory) per layer
    serial_cycles: float  # no overlap: compute + memory per layer
    dram_bytes: float
    dram_energy_uj: float
    mac_energy_uj: float

    @property
    def stall_cycles(self) -> float:
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


def compare(cost: Cost, reference: Cost) -> dict[str, float]:
    """``cost`` against ``reference``: speed-up (reference cycles / cycles) and the savings ``1 - energy /
    reference energy`` of the total and of the DRAM energy (0 where the reference spends none)."""
    def saving(key: str) -> float:
        return 1.0 - getattr(cost, key) / getattr(reference, key) if getattr(reference, key) else 0.0

    return {"speedup": reference.cycles / cost.cycles if cost.cycles else 1.0, "energy_saving": saving("energy_uj"),
            "dram_energy_saving": saving("dram_energy_uj")}


def layer_cost(work: LayerWork, accelerator: Accelerator, bits: int, batch: int = 1) -> LayerEstimate:
    """The cycles and energy per image of one layer in every format, its weights (at ``accelerator.weight_bits`` or
    ``bits``) read once per batch of ``batch`` images."""
    weight_bytes = math.ceil(work.gemm.weights * (accelerator.weight_bits or bits) / 8)
    compute = compute_cycles(work.gemm, accelerator.rows, accelerator.cols, accelerator.dataflow)
    mac_energy = work.gemm.macs * accelerator.pj_per_mac / PJ_PER_UJ
    costs = {}
    for fmt in FORMATS:
        dram = weight_bytes + batch * math.ceil(work.activation_bytes[fmt])  # one batch's
        memory = math.ceil(dram / accelerator.bytes_per_cycle) / batch
        costs[fmt] = Cost(compute, memory, max(compute, memory), compute + memory, dram / batch,
                          dram / batch * 8 * accelerator.pj_per_dram_bit / PJ_PER_UJ, mac_energy)
    return LayerEstimate(work.name, work.gemm.macs, compute, weight_bytes, costs)


@dataclass(frozen=True)
class AcceleratorEstimate:
    """A network's layers on one accelerator, per inference of one image (the mean over the measured images) in
    batches of ``batch``; with ``baseline``, the baseline model's estimate on the same accelerator and batch, and
    ``curves`` (``curves.model_curves`` and the ``story.energy_story`` line): the two models across bandwidths and
    batches."""

    accelerator: Accelerator
    layers: list[LayerEstimate]
    batch: int = 1
    baseline: "AcceleratorEstimate | None" = None
    curves: dict[str, Any] | None = None

    def total(self, fmt: str) -> Cost:
        """The network's cost in ``fmt``: the layers' sums."""
        return sum((layer.formats[fmt] for layer in self.layers[1:]), self.layers[0].formats[fmt])

    def weight_bytes(self) -> float:
        """The weights' DRAM bytes per image: every layer's, read once per batch."""
        return sum(layer.weight_bytes for layer in self.layers) / self.batch

    def speedup(self, fmt: str) -> float:
        """Dense cycles / ``fmt`` cycles."""
        return compare(self.total(fmt), self.total("dense"))["speedup"]

    def saving(self, fmt: str, energy: str = "energy_uj") -> float:
        """``1 - energy(fmt) / energy(dense)`` (``energy``: ``energy_uj`` or ``dram_energy_uj``)."""
        return compare(self.total(fmt), self.total("dense"))[SAVINGS[energy]]

    def against_baseline(self, fmt: str, reference: str) -> dict[str, float]:
        """``fmt`` against the baseline model in ``reference`` (``dense`` or ``zvc``); needs a baseline."""
        if self.baseline is None:
            raise ValueError("against_baseline() needs an estimate made with a baseline model")
        return compare(self.total(fmt), self.baseline.total(reference))

    def to_dict(self) -> dict[str, Any]:
        """Totals per format (with speed-up and savings against dense), every layer and the batch; with a baseline,
        its dense and ZVC totals, every format against both, and the curves."""
        formats = {fmt: {**self.total(fmt).to_dict(), **compare(self.total(fmt), self.total("dense"))}
                   for fmt in FORMATS}
        result = {"accelerator": self.accelerator.to_dict(), "batch": self.batch, "formats": formats,
                  "layers": [layer.to_dict() for layer in self.layers]}
        if self.baseline is not None:
            result["baseline"] = {"formats": {ref: self.baseline.total(ref).to_dict() for ref in BASELINE_FORMATS}}
            result["against_baseline"] = {ref: {fmt: self.against_baseline(fmt, ref) for fmt in FORMATS}
                                          for ref in BASELINE_FORMATS}
            result["curves"] = self.curves
        return result


def cost_network(works: list[LayerWork], accelerator: Accelerator, bits: int, batch: int) -> AcceleratorEstimate:
    """Every layer of ``works`` on ``accelerator`` in batches of ``batch``."""
    return AcceleratorEstimate(accelerator, [layer_cost(work, accelerator, bits, batch) for work in works], batch)

