"""Artefacts for hardware tools: compressed activation maps (codec streams), a SCALE-Sim topology CSV
and a per-layer density YAML for Sparseloop/Timeloop (documented in docs/EXPORTS.md)."""

from .density import density_document, density_yaml
from .maps import capture_maps, export_maps
from .scalesim import ConvLayer, conv_layers, topology_csv

__all__ = ["ConvLayer", "capture_maps", "conv_layers", "density_document", "density_yaml", "export_maps",
           "topology_csv"]
