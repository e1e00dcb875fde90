"""Artefacts for hardware tools: compressed activation maps (codec streams), SCALE-Sim topology and layout
CSVs with a table linking each of their rows to the maps it reads and writes, a per-map density YAML and a
Timeloop/Sparseloop file per layer (documented in docs/EXPORTS.md), and ONNX of a prepared model with dynamic
masks."""

from .density import density_document, density_yaml
from .maps import capture_maps, export_maps
from .onnx import to_onnx
from .scalesim import ConvLayer, conv_layers, conv_maps_csv, layout_csv, topology_csv
from .timeloop import layer_file_name, timeloop_document, timeloop_yaml, write_timeloop

__all__ = ["ConvLayer", "capture_maps", "conv_layers", "conv_maps_csv", "density_document", "density_yaml",
           "export_maps", "layer_file_name", "layout_csv", "timeloop_document", "timeloop_yaml", "to_onnx",
           "topology_csv", "write_timeloop"]
