"""``zebra export``: a trained checkpoint's artefacts for hardware tools, in one folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .. import codec
from .._io import atomic_write_text
from ..core import validate_format
from ..errors import ZebraError
from ..export import (
    capture_maps,
    conv_layers,
    conv_maps_csv,
    density_yaml,
    export_maps,
    layout_csv,
    to_onnx,
    topology_csv,
    write_timeloop,
)
from ..nn import zebra_layers
from ..training.opening import open_checkpoint


def export_checkpoint(checkpoint: str | Path, folder: str | Path, images: list[int] | tuple[int, ...] = (0, 1, 2, 3),
                      fmt: str = "zebra_zvc", bits: int | None = None, per_channel: bool = False,
                      overrides: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict[str, Any]:
    """Write ``topology.csv``, ``layout.csv`` and ``layers.csv`` (SCALE-Sim), ``density.yaml`` and ``timeloop/``
    (one Timeloop/Sparseloop file per row, maps in ``fmt``; densities measured on the test split) and ``maps/``
    (one codec stream per layer holding the test images ``images``) for ``checkpoint`` into ``folder``."""
    fmt = validate_format(fmt)
    opened = open_checkpoint(checkpoint, overrides)
    config, test_set = opened.config, opened.test_set
    bits = config.bits if bits is None else bits
    codec.validate_width(bits)
    bad = [i for i in images if not isinstance(i, int) or not 0 <= i < len(test_set)]
    if bad or not images:
        raise ZebraError(f"image indices {bad or list(images)} are invalid: the test split has {len(test_set)} "
                         f"images (use 0..{len(test_set) - 1})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = conv_layers(opened.model, opened.example_inputs())
    atomic_write_text(folder / "topology.csv", topology_csv(layers))
    atomic_write_text(folder / "layout.csv", layout_csv(layers))
    report = opened.evaluate(progress, dataclasses.replace(config, bits=bits))
    atomic_write_text(folder / "layers.csv", conv_maps_csv(layers, report))
    description = {"checkpoint": str(checkpoint), "model": config.model.name, "options": config.model.options,
                   "data": config.data.name, "bits": bits}
    atomic_write_text(folder / "density.yaml", density_yaml(report, description))
    write_timeloop(folder / "timeloop", layers, report, fmt)
    batch = torch.stack([test_set[i][0] for i in images])
    manifest = export_maps(opened.model, batch, folder / "maps", fmt, bits, per_channel)
    return {"topology": len(layers), "layers": len(report.layers), "maps": manifest, "folder": str(folder)}


def checkpoint_maps(checkpoint: str | Path, images: int = 3) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]],
                                                                     dict[str, Any]]:
    """Every call site's maps before and after its mask for the first ``images`` test images of the
    checkpoint's data (on the CPU), and each site's block size: what the report draws as zebra stripes."""
    opened = open_checkpoint(checkpoint, ["device=cpu"])
    test_set = opened.test_set
    batch = torch.stack([test_set[i][0] for i in range(min(images, len(test_set)))])
    return capture_maps(opened.model, batch), {site: layer.block_size for site, layer in zebra_layers(opened.model)}


def onnx_checkpoint(checkpoint: str | Path, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Write the model of ``checkpoint`` (prepared, with its thresholds) to ONNX at ``path``; masks stay dynamic."""
    opened = open_checkpoint(checkpoint, overrides, device=torch.device("cpu"))
    return to_onnx(opened.model, opened.example_inputs(), path)
