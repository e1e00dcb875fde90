"""The compressed activation maps of chosen images, one codec stream per layer, for testbenches."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import codec
from .._io import atomic_write_bytes, atomic_write_text
from ..core import bits_to_bytes, map_bits
from ..nn import eval_mode, model_device, zebra_layers


@torch.no_grad()
def capture_maps(model: nn.Module, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every call site's map before and after its block mask for ``images`` (CPU copies), by site name."""
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    before: dict[str, torch.Tensor] = {}
    handles = []
    for site, layer in zebra_layers(model):
        def keep_input(_module, inputs, site=site):  # copied first: the mask may be applied in place
            if inputs[0].dim() == 4:
                before[site] = inputs[0].detach().to("cpu", copy=True)

        def keep_output(_module, _inputs, output, site=site):
            if site in before:
                maps[site] = (before.pop(site), output.detach().to("cpu", copy=True))
        handles += [layer.register_forward_pre_hook(keep_input), layer.register_forward_hook(keep_output)]
    try:
        with eval_mode(model):
            model(images.to(model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return maps


def file_name(site: str, suffix: str = ".zbra") -> str:
    """A file name for a call site (``layer1.0.relu:1`` -> ``layer1.0.relu_1.zbra``; ``suffix`` replaces ``.zbra``)."""
    return re.sub(r"[^\w.-]", "_", site) + suffix


def export_maps(model: nn.Module, images: torch.Tensor, folder: str | Path, fmt: str = "zebra_zvc",
                bits: int = 8, per_channel: bool = False) -> dict[str, Any]:
    """Write one stream per call site (all ``images`` in it, at the site's block size), its levels as a decoder
    returns them (``.levels``: raw little-endian, raster order) and ``manifest.json`` listing each file's shape,
    block size, payload bytes and the traffic model's bytes (they are equal)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blocks = {site: layer.block_size for site, layer in zebra_layers(model)}
    files = []
    for site, (_, x) in capture_maps(model, images).items():
        stream = codec.encode(x, fmt, blocks[site], bits, per_channel=per_channel)
        info = codec.inspect(stream)
        atomic_write_bytes(folder / file_name(site), stream)
        decoded = codec.decode(stream)
        # the golden decoded levels: what encode quantised (at 32 bits the values: a skipped -0.0 decodes to 0.0)
        levels = (decoded.numpy().astype("<f4", copy=False) if bits == 32
                  else codec.quantize(x, bits, per_channel).levels)
        atomic_write_bytes(folder / file_name(site, ".levels"), levels.tobytes())
        predicted = int(bits_to_bytes(map_bits(decoded, blocks[site], bits)[fmt]).sum())
        files.append({"layer": site, "file": file_name(site), "shape": list(x.shape), "block_size": blocks[site],
                      "bytes": len(stream), "payload_bytes": info.payload_bytes, "model_bytes": predicted,
                      "levels": file_name(site, ".levels"), "levels_dtype": levels.dtype.name})
    manifest = {"format": fmt, "bits": bits, "per_channel": per_channel, "images": int(images.shape[0]),
                "layout": "docs/FORMAT.md", "files": files}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2))
    return manifest
