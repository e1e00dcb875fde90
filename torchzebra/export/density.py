"""Per-layer densities measured on a data set, in a form Sparseloop/Timeloop density models take."""

from __future__ import annotations

from typing import Any

import yaml

from ..analysis.measure import LayerTraffic, TrafficReport
from ..core import FORMATS


def density_document(report: TrafficReport, description: dict[str, Any]) -> dict[str, Any]:
    """A YAML-ready dict: what was measured, then one entry per activation map (call site).

    ``element_density`` is the fraction of non-zero values, ``block_density`` the fraction of blocks
    holding one, ``density_in_nonzero_blocks`` the fraction of non-zeros inside those blocks; ``bytes`` are
    the map's bytes in every format, as ``TrafficReport`` counts them (every map: its write and every read). The
    ``sparseloop`` entry fills a ``problem.instance.densities`` tensor (this map is the ``Outputs`` of the
    layer that writes it and the ``Inputs`` of each layer that reads it).
    """
    layers = [{"name": layer.name, "shape": list(layer.shape) if layer.shape else None, "block_size": layer.block_size,
               "maps": layer.maps, "reads": layer.consumers, **map_statistics(layer),
               "bytes": {fmt: layer.bytes[fmt] for fmt in FORMATS},
               "sparseloop": {"distribution": "hypergeometric", "density": round(layer.density, 6)}}
              for layer in report.layers]
    return {**description, "images": report.images, "top1": report.accuracy, "layers": layers}


def map_statistics(layer: LayerTraffic) -> dict[str, float]:
    """A map's element density, block density and density inside its non-zero blocks (rounded to 6 places)."""
    in_blocks = layer.nonzero_block_elements
    return {"element_density": round(layer.density, 6), "block_density": round(layer.block_density, 6),
            "density_in_nonzero_blocks": round(layer.nonzero / in_blocks, 6) if in_blocks else 0.0}


def density_yaml(report: TrafficReport, description: dict[str, Any]) -> str:
    """``density_document`` as YAML text."""
    return yaml.safe_dump(density_document(report, description), sort_keys=False, default_flow_style=None)
