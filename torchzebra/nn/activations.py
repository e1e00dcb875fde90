"""The activation calls ``prepare`` instruments: modules, functions and tensor methods, and which of them
give non-negative outputs (a ReLU's map needs no ``abs`` before its block sums)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh,
)
NONNEGATIVE_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
ACTIVATION_FUNCTIONS = {
    F.relu: "relu", F.relu_: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6",
    F.leaky_relu: "leaky_relu", F.elu: "elu", F.celu: "celu", F.selu: "selu", F.gelu: "gelu",
    F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish", F.hardtanh: "hardtanh",
}
NONNEGATIVE_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_, F.relu6}
ACTIVATION_METHODS = {"relu": True, "relu_": True}  # method name -> output is non-negative
