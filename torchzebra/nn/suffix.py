"""Run a prepared model again from one layer on: what the graph computes apart from that layer is computed once.

A search that tries many settings of one layer (``analysis.allocation``'s curves) runs the model on the same
images each time, and every node of the graph that does not depend on that layer comes out the same.
``SuffixRun`` keeps those values (only the ones a later node reads) from a whole run, and each later run computes
the nodes that depend on the layer: the same operations on the same values, so the outputs are bit for bit a
whole forward's.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Hashable
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from .layer import ZebraLayer
from .state import prepared_module, zebra_layers

_IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                       operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
                       operator.irshift, operator.imatmul, operator.setitem}


class SuffixRun:
    """Calls of ``model`` (prepared, in the mode it will run in) on one batch where only the layer at ``site``
    and the nodes that depend on it change between calls. A call with a new ``state`` (what identifies
    everything else: the settings of the layers in ``fixed_sites``, the weights, the inputs) runs the whole graph
    and keeps the values the rerun nodes read; a call with the same ``state`` computes only the nodes that
    depend on the layer. Where a node that is not rerun may write a tensor in place after the layer, every call
    runs the whole graph (its write could reach a kept value)."""

    def __init__(self, model: nn.Module, site: str) -> None:
        module = prepared_module(model, "SuffixRun")
        layers = dict(zebra_layers(module))
        layer = layers[site]
        self.module, self.graph, self.site = module, module.graph, site  # the graph of the mode the model is in now
        nodes = list(self.graph.nodes)
        self.start = next(node for node in nodes
                          if node.op == "call_module" and module.get_submodule(str(node.target)) is layer)
        self.after = _depending_on(self.start)
        self.kept_nodes = {arg for node in self.after for arg in node.all_input_nodes if arg not in self.after}
        later = nodes[nodes.index(self.start):]
        self.partial = (any(node.op == "output" for node in self.after)
                        and not any(node not in self.after and _may_write_in_place(node, module) for node in later))
        sites = {id(each): name for name, each in layers.items()}
        self.fixed_sites = [sites[id(module.get_submodule(str(node.target)))] for node in nodes
                            if node not in self.after and node.op == "call_module"
                            and isinstance(module.get_submodule(str(node.target)), ZebraLayer)]
        self.kept: dict[fx.Node, Any] | None = None
        self.state: Hashable = None

    @torch.no_grad()
    def __call__(self, *inputs: Any, state: Hashable = None) -> Any:
        """The model's outputs on ``inputs`` (the same at every call of one ``state``)."""
        if not self.partial:  # nothing will be reused: the module's own code, no copies
            return self.module(*inputs)
        if self.kept is None or state != self.state:
            keeping = _Keeping(self.module, self.graph, self.start, self.kept_nodes)
            outputs = keeping.run(*inputs)
            self.kept, self.state = keeping.kept, state
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


def _may_write_in_place(node: fx.Node, module: fx.GraphModule) -> bool:
    """Whether ``node`` may overwrite a tensor it reads: a module with ``inplace`` set (``nn.ReLU(inplace=True)``,
    a ZebraLayer that masks in place), an in-place operator or method (``+=``, ``x.add_``), or a function called
    with ``inplace=True``."""
    if node.op == "call_module":
        return getattr(module.get_submodule(str(node.target)), "inplace", False) is True
    if node.op == "call_method":
        name = str(node.target)
        return (name.endswith("_") and not name.startswith("__")) or node.kwargs.get("inplace") is True
    if node.op != "call_function":
        return False
    target = node.target
    assert callable(target)  # a call_function node's target is the function
    name = getattr(target, "__name__", "")
    if target in _IN_PLACE_OPERATORS or (name.endswith("_") and not name.startswith("__")):
        return True
    try:
        return inspect.signature(target).bind(*node.args, **node.kwargs).arguments.get("inplace") is True
    except (TypeError, ValueError):  # a builtin without a signature, or arguments it does not bind
        return node.kwargs.get("inplace") is True


def _copy(value: Any) -> Any:
    """``value`` with every tensor in it cloned (a node's value may be a tuple or list of tensors)."""
    return tree_map(lambda item: item.clone() if isinstance(item, torch.Tensor) else item, value)


class _Keeping(fx.Interpreter):
    """A whole run that keeps a copy of the values of ``keep``: those computed before ``start`` as they are when
    it runs (after any write in place before it), the others as each is computed (before a node after ``start``
    can write it in place)."""

    def __init__(self, module: fx.GraphModule, graph: fx.Graph, start: fx.Node, keep: set[fx.Node]) -> None:
        super().__init__(module, graph=graph)
        self.start, self.keep = start, keep
        self.kept: dict[fx.Node, Any] = {}
        self.started = False

    def run_node(self, n: fx.Node) -> Any:
        if n is self.start:
            self.started = True
            self.kept = {node: _copy(self.env[node]) for node in self.keep if node in self.env}
        value = super().run_node(n)
        if self.started and n in self.keep:
            self.kept[n] = _copy(value)
        return value
