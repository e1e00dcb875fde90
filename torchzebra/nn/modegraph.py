"""A GraphModule with one graph per mode, for models whose traced operations differ between train and eval.

Like torchvision's ``DualGraphModule`` (its feature extraction, which timm uses too), both graphs share the
model's modules and the ZebraLayers; unlike it, the mode is read at each call: ``forward`` runs the graph of
``self.training``, however the flag was set (``.train()``/``.eval()``, or by hand as a freeze loop does).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable

from torch import fx, nn
from torch.fx.graph import PythonCode

Reduce = Callable[["ModeGraphModule"], tuple[Callable[..., fx.GraphModule], tuple[Any, ...]]]


class ModeGraphModule(fx.GraphModule):
    """A prepared model that runs the graph of its current mode (``mode_graphs[self.training]``); ``graph`` and
    ``code`` are those of the current mode. ``reduce`` says how it pickles and copies (the caller that built
    it knows how to build it again)."""

    mode_graphs: dict[bool, fx.Graph]  # set by the caller once both graphs are final, then ``recompile()``
    mode_code: dict[bool, str]

    def __init__(self, root: nn.Module, graph: fx.Graph, class_name: str, reduce: Reduce) -> None:
        super().__init__(root, graph, class_name)
        self.reduce = reduce

    @property
    def graph(self) -> fx.Graph:
        """The graph of the current mode."""
        graphs = self.__dict__.get("mode_graphs")
        return graphs[self.training] if graphs is not None else self._graph

    @graph.setter
    def graph(self, graph: fx.Graph) -> None:
        """Replace the current mode's graph (GraphModule's setter, which regenerates the code)."""
        graphs = self.__dict__.get("mode_graphs")
        if graphs is not None:
            graphs[self.training] = graph
        fx.GraphModule.graph.fset(self, graph)  # type: ignore[attr-defined]  # the property mypy does not see

    @property
    def code(self) -> str:
        """The code of the current mode's graph."""
        codes = self.__dict__.get("mode_code")
        return codes[self.training] if codes is not None else super().code

    def recompile(self) -> PythonCode:
        """Generate the code of each mode's graph (GraphModule's own recompile, once per graph); the ``forward``
        they share picks one per call."""
        graphs = self.__dict__.get("mode_graphs")
        if graphs is None:  # GraphModule.__init__, before ``mode_graphs`` is set
            return super().recompile()
        forwards, codes = {}, {}
        for mode in (False, True):
            self._graph = graphs[mode]
            self._graph.owning_module = self
            python_code = super().recompile()
            forwards[mode], codes[mode] = type(self).forward, self._code
        self.mode_code = codes

        @functools.wraps(forwards[True])  # the graphs' signature, for torch.export and the ONNX exporter
        def forward(self: ModeGraphModule, *args: Any, **kwargs: Any) -> Any:
            return forwards[self.training](self, *args, **kwargs)

        type(self).forward = forward  # each GraphModule has a class of its own
        return python_code

    def __reduce__(self) -> tuple[Callable[..., fx.GraphModule], tuple[Any, ...]]:
        return self.reduce(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> fx.GraphModule:
        rebuild, args = self.__reduce__()
        result = rebuild(*copy.deepcopy(args, memo))
        memo[id(self)] = result
        return result
