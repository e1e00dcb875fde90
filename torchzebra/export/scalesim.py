"""A SCALE-Sim topology CSV of a model's conv (and linear) layers, with the shapes they really see."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import eval_mode, plain_model

HEADER = ["Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter",
          "Strides"]


@dataclass(frozen=True)
class ConvLayer:
    """One row: SCALE-Sim has no padding, so the IFMAP is the padded input (its output size is then right)."""

    name: str
    ifmap_height: int
    ifmap_width: int
    filter_height: int
    filter_width: int
    channels: int  # input channels per group
    filters: int
    stride: int

    def row(self) -> list:
        return [self.name, self.ifmap_height, self.ifmap_width, self.filter_height, self.filter_width, self.channels,
                self.filters, self.stride]


@torch.no_grad()
def conv_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[ConvLayer]:
    """Every Conv2d and Linear called in one forward pass of ``example_inputs``, in call order.

    Linear layers are 1x1 convolutions on a 1x1 map; a grouped conv lists its channels per group.
    """
    plain = plain_model(model)
    rows: list[ConvLayer] = []
    names = {module: name for name, module in plain.named_modules()}

    def record(module: nn.Module, inputs: tuple, _output) -> None:
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            pad_h, pad_w = (module.padding if isinstance(module.padding, tuple) else (0, 0))
            if module.padding == "same":
                pad_h, pad_w = (module.kernel_size[0] - 1) // 2, (module.kernel_size[1] - 1) // 2
            rows.append(ConvLayer(names[module], x.shape[-2] + 2 * pad_h, x.shape[-1] + 2 * pad_w,
                                  *module.kernel_size, module.in_channels // module.groups, module.out_channels,
                                  module.stride[0]))
        else:
            rows.append(ConvLayer(names[module], 1, 1, 1, 1, module.in_features, module.out_features, 1))

    handles = [m.register_forward_hook(record) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with eval_mode(model):
            model(example_inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return rows


def topology_csv(layers: list[ConvLayer]) -> str:
    """The layers as SCALE-Sim's topology CSV (each line ends with a comma, as its own files do)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=",\n")
    writer.writerow(HEADER)
    for layer in layers:
        writer.writerow(layer.row())
    return out.getvalue()
