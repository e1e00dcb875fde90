"""measure(): DRAM traffic of every instrumented map over a data set, and accuracy on the same pass.

Traffic of a map is one write by its producer plus one read per consumer (docs/METHOD.md section 3); the
headline counts activation maps only. Reductions are ``1 - format bytes / dense bytes`` summed over
every map of every image.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Sized, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from .._io import atomic_write_text
from .._numbers import percent
from ..core import COMPRESSED, FORMATS, TrafficTally, validate_bits, validate_format
from ..errors import ZebraError
from ..nn import ActivationCalls, eval_mode, model_device, prepared_module, zebra_layers


@dataclass(frozen=True)
class LayerTraffic:
    """Traffic of one call site over all measured images; ``bytes`` counts the write and every read."""

    name: str
    shape: tuple[int, ...] | None  # (C, H, W) of its maps; None when the input size varied
    block_size: int | str
    maps: int
    elements: int  # over all maps
    blocks: int  # over all maps
    nonzero: int
    nonzero_blocks: int
    nonzero_block_elements: int  # elements inside the non-zero blocks
    consumers: int
    bytes: dict[str, int]

    @property
    def shape_text(self) -> str:
        """The map shape as ``CxHxW``, or ``mixed``."""
        return "x".join(map(str, self.shape)) if self.shape else "mixed"

    @property
    def density(self) -> float:
        """Fraction of non-zero elements."""
        return self.nonzero / self.elements if self.elements else 0.0

    @property
    def block_density(self) -> float:
        """Fraction of non-zero blocks."""
        return self.nonzero_blocks / self.blocks if self.blocks else 0.0

    def reduction(self, fmt: str) -> float:
        """``1 - bytes(fmt) / bytes(dense)`` for this layer."""
        return 1.0 - self.bytes[validate_format(fmt)] / self.bytes["dense"] if self.bytes["dense"] else 0.0


@dataclass(frozen=True)
class TrafficReport:
    """Per-layer traffic of a model over a data set, its totals, and the accuracy of the same pass."""

    layers: list[LayerTraffic]
    bits: int
    images: int
    correct: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # call site -> why it is left unmasked and uncounted
    coverage: float | None = None  # fraction of the activation elements on 4-D maps that the layers count

    @property
    def complete(self) -> bool:
        """True unless some activation map was left uncounted (a partial reduction is not the model's)."""
        return not self.skipped and (self.coverage is None or self.coverage >= 1.0)

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy in [0, 1], or None when the data had no labels."""
        return None if self.correct is None or not self.images else self.correct / self.images

    def total_bytes(self, fmt: str) -> int:
        """Bytes moved in format ``fmt`` over every map of every image."""
        validate_format(fmt)
        return sum(layer.bytes[fmt] for layer in self.layers)

    def reduction(self, fmt: str) -> float:
        """Bandwidth reduction of ``fmt`` against dense: ``1 - bytes(fmt) / bytes(dense)``."""
        dense = self.total_bytes("dense")
        return 1.0 - self.total_bytes(fmt) / dense if dense else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, totals, reductions, accuracy and one entry per layer."""
        return {
            "bits": self.bits,
            "images": self.images,
            "accuracy": self.accuracy,
            "bytes": {fmt: self.total_bytes(fmt) for fmt in FORMATS},
            "reduction": {fmt: self.reduction(fmt) for fmt in FORMATS},
            "layers": [
                {**asdict(layer), "density": layer.density, "block_density": layer.block_density}
                for layer in self.layers
            ],
            "skipped": dict(self.skipped),
            "coverage": self.coverage,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrafficReport":
        """The report ``to_dict`` wrote (derived fields such as totals and densities are recomputed)."""
        names = {f.name for f in fields(LayerTraffic)}
        layers = [LayerTraffic(**{**{k: v for k, v in layer.items() if k in names},
                                  "shape": tuple(layer["shape"]) if layer["shape"] else None})
                  for layer in values["layers"]]
        correct = None if values["accuracy"] is None else round(values["accuracy"] * values["images"])
        return cls(layers, values["bits"], values["images"], correct, dict(values.get("skipped", {})),
                   values.get("coverage"))

    def to_csv(self, path) -> None:
        """Write one row per layer (atomically: a failed write leaves no partial file)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            ["layer", "shape", "block_size", "maps", "consumers", "density", "block_density"]
            + [f"bytes_{fmt}" for fmt in FORMATS]
        )
        for layer in self.layers:
            writer.writerow(
                [layer.name, layer.shape_text, layer.block_size, layer.maps, layer.consumers,
                 f"{layer.density:.6f}", f"{layer.block_density:.6f}"]
                + [layer.bytes[fmt] for fmt in FORMATS]
            )
        atomic_write_text(path, out.getvalue())

    def __str__(self) -> str:
        header = ["layer", "shape", "blk", "reads", "density", "blk dens", f"dense KiB/{self.images} images"]
        header += [fmt.replace("_", "+") for fmt in COMPRESSED]
        rows = [
            [
                layer.name,
                layer.shape_text,
                str(layer.block_size),
                str(layer.consumers),
                f"{layer.density:.1%}",
                f"{layer.block_density:.1%}",
                f"{layer.bytes['dense'] / 1024:.1f}",
            ]
            + [percent(layer.reduction(fmt)) for fmt in COMPRESSED]
            for layer in self.layers
        ]
        rows.append(
            ["total", "", "", "", "", "", f"{self.total_bytes('dense') / 1024:.1f}"]
            + [percent(self.reduction(fmt)) for fmt in COMPRESSED]
        )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        accuracy = "" if self.accuracy is None else f", top-1 {self.accuracy:.2%}"
        title = (
            f"Activation traffic, {self.images} images at {self.bits} bits{accuracy}; "
            "zvc/zebra/zebra+zvc columns: bandwidth reduction against dense"
        )
        skipped = [f"skipped {site}: {reason}" for site, reason in self.skipped.items()]
        if self.coverage is not None and self.coverage < 1.0:
            skipped.append(f"covers {self.coverage:.1%} of the activation elements on 4-D maps: the totals are "
                           "not the whole model's")
        return "\n".join([title, line(header), *(line(r) for r in rows), *skipped])


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], labels
    raise ZebraError(f"measure() expects batches that are a tensor or (inputs, labels), got {type(batch).__name__}")


@torch.no_grad()
def measure(
    model: nn.Module,
    loader: Iterable,
    bits: int = 8,
    max_batches: int | None = None,
    progress: bool = False,
) -> TrafficReport:
    """Run ``model`` (prepared) in eval mode over ``loader`` and count every instrumented map's traffic.

    Batches are tensors or ``(inputs, labels, ...)``; with labels the top-1 accuracy of the same pass is
    reported; ``coverage`` is the fraction of the activation elements on 4-D maps (of the first batch)
    that the Zebra layers count. The model's mode is restored afterwards.
    """
    validate_bits(bits)
    model = prepared_module(model, "measure")  # a torch.compile wrapper's eager module: the tallies run in Python
    layers = zebra_layers(model)
    device = model_device(model)
    for _, layer in layers:
        layer.tally = TrafficTally(layer.block_size, bits)
    images, correct, labelled, coverage = 0, torch.zeros((), dtype=torch.int64, device=device), True, None
    try:
        batches = itertools.islice(loader, max_batches)
        sized = cast(Sized, loader)
        total = min(len(sized), max_batches or len(sized)) if hasattr(loader, "__len__") else max_batches
        with eval_mode(model):
            for batch in tqdm(batches, desc="measure", total=total, disable=not progress, leave=False):
                inputs, labels = _split_batch(batch)
                if coverage is None:
                    outputs, coverage = _covered_forward(model, layers, inputs.to(device, non_blocking=True))
                else:
                    outputs = model(inputs.to(device, non_blocking=True))
                images += inputs.shape[0]
                if labels is None or outputs.dim() != 2:
                    labelled = False
                else:
                    correct += (outputs.argmax(1) == labels.to(device)).sum()
        if not images:
            raise ZebraError("measure() got no batches: give it a non-empty iterable of tensors or (inputs, labels)")
        rows = [layer_traffic(layer) for _, layer in layers if layer.tally is not None and layer.tally.maps]
    finally:
        for _, layer in layers:
            layer.tally = None
    skipped = {site: layer.skipped for site, layer in layers if layer.skipped}
    return TrafficReport(rows, bits, images, int(correct) if labelled and images else None, skipped, coverage)


def _covered_forward(model: nn.Module, layers: list, inputs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The outputs of the first batch, and the fraction of its activation elements that the layers counted."""
    with ActivationCalls() as calls:
        outputs = model(inputs)
    counted = sum(layer.tally.elements for _, layer in layers)
    return outputs, counted / calls.elements if calls.elements else 1.0


def layer_traffic(layer) -> LayerTraffic:
    """What ``layer``'s tally has counted, as a report row (its bytes count the write and every read)."""
    tally = layer.tally
    accesses = 1 + layer.consumers
    return LayerTraffic(
        name=layer.site,
        shape=tally.shape,
        block_size=layer.block_size,
        maps=tally.maps,
        elements=tally.elements,
        blocks=tally.blocks,
        nonzero=int(tally.nonzero),
        nonzero_blocks=int(tally.nonzero_blocks),
        nonzero_block_elements=int(tally.nonzero_block_elements),
        consumers=layer.consumers,
        bytes={fmt: int(tally.map_bytes[fmt]) * accesses for fmt in FORMATS},
    )
