"""A GraphModule with one graph per mode, for models whose traced operations differ between train and eval.

Like torchvision's ``DualGraphModule`` (its feature extraction, which timm uses too): both graphs share the
model's modules and the ZebraLayers, and ``.train()``/``.eval()`` switch to the graph of the new mode.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from torch import fx, nn


class ModeGraphModule(fx.GraphModule):
    """A prepared model that runs the graph of its current mode (``mode_graphs[self.training]``)."""

    mode_graphs: dict[bool, fx.Graph]

    def train(self, mode: bool = True) -> "ModeGraphModule":
        super().train(mode)
        self.follow_mode()
        return self

    def follow_mode(self) -> None:
        """Run the graph of the current mode (``train``/``eval`` call this; so does any code that sets
        ``training`` flags directly, as ``training_mode`` does)."""
        graphs = self.__dict__.get("mode_graphs")
        if graphs is not None and self.graph is not graphs[self.training]:
            self.graph = graphs[self.training]  # GraphModule's setter regenerates forward()

    def __reduce__(self) -> tuple[Callable[..., Any], tuple]:
        """Pickled as the plain model, its settings and its ZebraLayers: loading traces the model again
        (as GraphModule's own unpickling does from its code) and puts the saved layers back."""
        from .prepare import CONTAINER, prepared_state
        state = prepared_state(self)
        return _rebuild, (state.original, state.config, getattr(self, CONTAINER), self.training)

    def __deepcopy__(self, memo: dict[int, Any]) -> "ModeGraphModule":
        rebuild, args = self.__reduce__()
        result = rebuild(*copy.deepcopy(args, memo))
        memo[id(self)] = result
        return result


def _rebuild(original: nn.Module, config: Any, container: nn.Module, training: bool) -> fx.GraphModule:
    """A prepared model rebuilt from its plain model, settings and (saved) ZebraLayers."""
    from .prepare import CONTAINER, instrument
    model = instrument(original, config, container)
    model.training = training
    getattr(model, CONTAINER).training = container.training
    if isinstance(model, ModeGraphModule):
        model.follow_mode()
    return model


def follow_modes(model: nn.Module) -> None:
    """Have every ModeGraphModule inside ``model`` run the graph of its current ``training`` flag."""
    for module in model.modules():
        if isinstance(module, ModeGraphModule):
            module.follow_mode()
