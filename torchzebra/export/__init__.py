"""Artefacts for hardware tools: compressed activation maps (codec streams), SCALE-Sim topology and layout
CSVs with a table linking each of their rows to the maps it reads and writes, and a per-layer density YAML
for Sparseloop/Timeloop (documented in docs/EXPORTS.md), and ONNX of a prepared model with dynamic masks."""

from .density import density_document, density_yaml
from .maps import capture_maps, export_maps
from .onnx import to_onnx
from .scalesim import ConvLayer, conv_layers, conv_maps_csv, layout_csv, topology_csv

__all__ = ["ConvLayer", "capture_maps", "conv_layers", "conv_maps_csv", "density_document", "density_yaml",
           "export_maps", "layout_csv", "to_onnx", "topology_csv"]
