"""Which activation maps a model writes, counted at run time: the check that ``prepare`` missed none.

``ActivationCalls`` is a ``TorchFunctionMode`` that counts every activation call whose output is a 4-D map,
wherever it is made (a module, a function, a tensor method, inside a submodule kept whole), so a report
can say what fraction of the activation elements its Zebra layers cover.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .activations import ACTIVATION_FUNCTIONS

# every activation module's forward calls one of these (nn.PReLU: F.prelu, nn.ReLU6: F.hardtanh)
COUNTED_CALLS = frozenset(ACTIVATION_FUNCTIONS) | {F.prelu, torch.Tensor.relu, torch.Tensor.relu_}


class ActivationCalls(TorchFunctionMode):
    """While active, counts the activation calls that output a 4-D map and the elements they write."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.elements = 0

    def __torch_function__(self, func: Callable[..., Any], types: tuple, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        output = func(*args, **(kwargs or {}))
        if func in COUNTED_CALLS and isinstance(output, torch.Tensor) and output.dim() == 4:
            self.calls += 1
            self.elements += output.numel()
        return output
