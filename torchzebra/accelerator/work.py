"""The work of each conv/linear layer: its operand matrices and its share of the measured activation traffic.

A measured map costs one write and one read per consumer (docs/METHOD.md). Each access goes to one topology
row: the write to the row whose output becomes the map (through BN, residual sum and activation), a read to the
row that reads it, or that reads it through a fused residual sum or pooling op; accesses that no row makes go
to one extra row, so the rows' bytes always add up to the report's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..analysis.measure import TrafficReport
from ..core import FORMATS
from ..errors import ZebraError
from ..export import ConvLayer
from .spec import Accelerator
from .systolic import Gemm

UNLINKED = "(maps not linked to a layer)"  # accesses of measured maps that no conv/linear row reads or writes


@dataclass(frozen=True)
class LayerWork:
    """One conv/linear layer as the estimate sees it: its operand matrices (and so its MACs and weights) and,
    per format, the activation bytes per image it moves to and from DRAM."""

    name: str
    gemm: Gemm
    activation_bytes: dict[str, float]  # per image, every format


def gemm_of(layer: ConvLayer) -> Gemm:
    """SCALE-Sim's operand matrices of a topology row (a depthwise row: one single-channel layer per channel)."""
    pixels = layer.ofmap_words // layer.output_shape[0] if layer.output_shape else 1
    if layer.depthwise:
        return Gemm(pixels, layer.filter_height * layer.filter_width, layer.filters, layer.channels)
    return Gemm(pixels, layer.filter_height * layer.filter_width * layer.channels, layer.filters)


def _access_bytes(report: TrafficReport) -> dict[str, tuple[int, dict[str, float]]]:
    """Per measured map: (reads it allows, bytes per image of one access in every format)."""
    return {layer.name: (layer.consumers, {fmt: layer.bytes[fmt] / (report.images * (1 + layer.consumers))
                                           for fmt in FORMATS}) for layer in report.layers}


def _claims(layers: list[ConvLayer], sizes: dict) -> tuple[list[list[str]], dict[str, int]]:
    """Which map accesses each row makes (its write, its read, its fused reads, in call order), each map's write
    and reads handed out once; and the accesses of each map that no row made."""
    left = {site: [1, reads] for site, (reads, _) in sizes.items()}  # writes and reads not yet claimed
    claimed: list[list[str]] = []
    for layer in layers:
        mine = []
        for kind, site in ((0, layer.writes), (1, layer.reads), *((1, s) for s in layer.fused_reads)):
            if site in left and left[site][kind] > 0:
                left[site][kind] -= 1
                mine.append(site)
        claimed.append(mine)
    return claimed, {site: sum(counts) for site, counts in left.items() if sum(counts)}


def _on_chip(sizes: dict, accelerator: Accelerator | None) -> dict[str, set[str]]:
    """Per format, the maps that stay on chip: one copy fits in the ofmap buffer its producer writes and in the
    ifmap buffer its consumers read (None: every map goes to DRAM)."""
    if accelerator is None:
        return {fmt: set() for fmt in FORMATS}
    room = min(accelerator.buffer_bytes("ifmap"), accelerator.buffer_bytes("ofmap"))
    return {fmt: {site for site, (_, size) in sizes.items() if size[fmt] <= room} for fmt in FORMATS}


def layer_work(layers: list[ConvLayer], report: TrafficReport, on_chip: Accelerator | None = None) -> list[LayerWork]:
    """Each row with its share of the measured traffic per image, plus an ``UNLINKED`` row (no MACs) when some
    accesses are no row's. With ``on_chip`` (the accelerator whose buffers decide), maps that stay on chip
    cost no DRAM bytes."""
    if not report.images:
        raise ZebraError("the traffic report has no images: measure at least one")
    sizes = _access_bytes(report)
    kept = _on_chip(sizes, on_chip)
    claimed, unlinked = _claims(layers, sizes)

    def moved(accesses: Iterable[tuple[str, int]]) -> dict[str, float]:
        accesses = list(accesses)
        return {fmt: sum(count * sizes[site][1][fmt] for site, count in accesses if site not in kept[fmt])
                for fmt in FORMATS}

    work = [LayerWork(layer.name, gemm_of(layer), moved((site, 1) for site in sites))
            for layer, sites in zip(layers, claimed)]
    if unlinked:
        work.append(LayerWork(UNLINKED, Gemm(0, 0, 0), moved(unlinked.items())))
    return work
