"""Run a prepared model again from one layer on: what the graph computes before that layer is computed once.

A search that tries many settings of one layer (``analysis.allocation``'s curves) runs the model on the same
images each time, and everything the graph computes before that layer, and not from it, comes out the same.
``SuffixRun`` keeps those values (only the ones a later node reads) from its first, whole run, and each later
run computes the nodes that depend on the layer: the same operations on the same values, so the outputs are
bit for bit a whole forward's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from .state import prepared_module, zebra_layers


class SuffixRun:
    """Calls of ``model`` (prepared, in the mode it will run in) on one batch where only the layer at ``site``
    and the layers after it change between calls: the first call runs the whole graph and keeps the values
    before the layer that the rest reads; later calls compute only what depends on the layer. The caller
    keeps everything before the layer as it was at the first call (weights, thresholds, statistics, inputs)."""

    def __init__(self, model: nn.Module, site: str) -> None:
        module = prepared_module(model, "SuffixRun")
        layer = dict(zebra_layers(module))[site]
        self.module, self.graph = module, module.graph  # the graph of the mode the model is in now
        start = next(node for node in self.graph.nodes
                     if node.op == "call_module" and module.get_submodule(str(node.target)) is layer)
        self.after = _depending_on(start)
        self.partial = any(node.op == "output" for node in self.after)  # else nothing to reuse: whole runs
        self.kept_nodes = {arg for node in self.after for arg in node.all_input_nodes if arg not in self.after}
        self.kept: dict[fx.Node, Any] | None = None

    @torch.no_grad()
    def __call__(self, *inputs: Any) -> Any:
        """The model's outputs on ``inputs`` (the same at every call)."""
        if self.kept is None or not self.partial:
            keeping = _Keeping(self.module, self.graph, self.kept_nodes)
            outputs = keeping.run(*inputs)
            self.kept = keeping.kept
            return outputs
        env: dict[fx.Node, Any] = {node: None for node in self.graph.nodes if node not in self.after}
        env.update({node: _copy(value) for node, value in self.kept.items()})  # the layers may write in place
        return fx.Interpreter(self.module, graph=self.graph).run(*inputs, initial_env=env)


def _depending_on(start: fx.Node) -> set[fx.Node]:
    """``start`` and every node that reads it, directly or through others."""
    found, todo = {start}, [start]
    while todo:
        for user in todo.pop().users:
            if user not in found:
                found.add(user)
                todo.append(user)
    return found


def _copy(value: Any) -> Any:
    """``value`` with every tensor in it cloned (a node's value may be a tuple or list of tensors)."""
    return tree_map(lambda item: item.clone() if isinstance(item, torch.Tensor) else item, value)


class _Keeping(fx.Interpreter):
    """A whole run that keeps a copy of the values of ``keep``, taken as each is computed (before a later
    layer can mask it in place)."""

    def __init__(self, module: fx.GraphModule, graph: fx.Graph, keep: set[fx.Node]) -> None:
        super().__init__(module, graph=graph)
        self.keep = keep
        self.kept: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n in self.keep:
            self.kept[n] = _copy(value)
        return value
