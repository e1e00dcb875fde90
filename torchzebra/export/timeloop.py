"""Per-layer Timeloop/Sparseloop inputs: each conv row's workload with the measured densities of the maps it reads
and writes, and their representation format at DRAM (a block bitmask over an element bitmask for Zebra+ZVC).

Written to Timeloop's v0.4 problem and sparse-optimization specifications. Sparseloop's density models
(uniform, hypergeometric) place zeros independently, so they cannot express Zebra's clustered zero blocks: the
measured block statistics ride along under a ``torchzebra`` key for the user's own model (docs/EXPORTS.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .._io import atomic_write_text
from ..analysis.measure import LayerTraffic, TrafficReport
from .density import map_statistics
from .scalesim import ConvLayer

# Sparseloop's rank formats per torchzebra format, outer rank first: B = bitmask, U = uncompressed
RANKS = {"dense": [], "zvc": ["B"], "zebra": ["B", "U"], "zebra_zvc": ["B", "B"]}
SHAPE = {  # Timeloop's CNN layer: dimensions, strides and the three data spaces' projections
    "name": "CNN_Layer",
    "dimensions": ["C", "M", "R", "S", "N", "P", "Q"],
    "coefficients": [{"name": "Wstride", "default": 1}, {"name": "Hstride", "default": 1}],
    "data_spaces": [
        {"name": "Weights", "projection": [[["C"]], [["M"]], [["R"]], [["S"]]]},
        {"name": "Inputs", "projection": [[["N"]], [["C"]], [["R"], ["P", "Wstride"]], [["S"], ["Q", "Hstride"]]]},
        {"name": "Outputs", "projection": [[["N"]], [["M"]], [["Q"]], [["P"]]], "read_write": True},
    ],
}


def layer_file_name(index: int, layer: ConvLayer) -> str:
    """``003-layer1.0.conv1.yaml``: the row's position in the topology and its name, safe as a file name."""
    return f"{index:03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', layer.name)}.yaml"


def timeloop_document(layer: ConvLayer, report: TrafficReport, fmt: str = "zebra_zvc") -> dict[str, Any]:
    """One row as a Timeloop problem (shape, instance with the measured ``Inputs``/``Outputs`` densities), the
    DRAM representation format of its maps in ``fmt``, and the measured block statistics (``torchzebra``).

    A depthwise row is one channel (``C = M = 1``) run ``torchzebra.repeat`` times, as SCALE-Sim runs it."""
    maps = {site.name: site for site in report.layers}
    operands = {"Inputs": maps.get(layer.reads), "Outputs": maps.get(layer.writes)}  # None: not measured
    instance = {"C": 1 if layer.depthwise else layer.channels, "M": 1 if layer.depthwise else layer.filters,
                "R": layer.filter_width, "S": layer.filter_height, "N": 1,  # R, P: widths; S, Q: heights
                "P": layer.output_shape[2] if len(layer.output_shape) > 2 else 1,
                "Q": layer.output_shape[1] if len(layer.output_shape) > 1 else 1,
                "Wstride": layer.stride, "Hstride": layer.stride,
                "densities": {name: {"distribution": "hypergeometric", "density": round(site.density, 6)}
                              for name, site in operands.items() if site is not None}}
    spaces = [{"name": name, "ranks": [{"format": rank} for rank in RANKS[fmt]]}
              for name, site in operands.items() if site is not None and RANKS[fmt]]
    return {"problem": {"version": 0.4, "shape": SHAPE, "instance": instance},
            "sparse_optimizations": {"version": 0.4, "targets": [
                {"name": "DRAM", "representation_format": {"data_spaces": spaces}}] if spaces else []},
            "torchzebra": {"layer": layer.name, "format": fmt, "repeat": layer.channels if layer.depthwise else 1,
                           "maps": {name: _measured(site) for name, site in operands.items() if site is not None}}}


def _measured(site: LayerTraffic) -> dict[str, Any]:
    """A measured map's call site, block size and densities (``export.density``'s statistics)."""
    return {"site": site.name, "block_size": site.block_size, **map_statistics(site)}


def timeloop_yaml(layer: ConvLayer, report: TrafficReport, fmt: str = "zebra_zvc") -> str:
    """``timeloop_document`` as YAML text."""
    return yaml.safe_dump(timeloop_document(layer, report, fmt), sort_keys=False, default_flow_style=None)


def write_timeloop(folder: str | Path, layers: list[ConvLayer], report: TrafficReport, fmt: str = "zebra_zvc") -> int:
    """One ``timeloop_yaml`` file per row into ``folder`` (made if missing), named by ``layer_file_name``; the count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, layer in enumerate(layers):
        atomic_write_text(folder / layer_file_name(index, layer), timeloop_yaml(layer, report, fmt))
    return len(layers)
