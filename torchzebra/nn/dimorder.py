"""The dim order of every tensor of a traced CNN: which logical dim (N, C, H, W) each dim holds, followed
from the input through permutes and transposes; a reshape makes it unknown, a conv, pool or norm resets it."""

from __future__ import annotations

from torch import fx, nn

from .activations import ACTIVATION_MODULES

IDENTITY = (0, 1, 2, 3)  # which logical dim (N, C, H, W) each dim of a 4-D tensor holds
_NAMES = {IDENTITY: "NCHW", (0, 2, 3, 1): "NHWC"}
_LAYOUT_KEEPING = (nn.Linear, nn.LayerNorm, nn.Identity, nn.Dropout, nn.AlphaDropout, *ACTIVATION_MODULES)
_PERMUTES = {"permute", "transpose", "swapaxes", "swapdims"}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "movedim", "moveaxis",
             "view_as", "reshape_as", "expand", "expand_as", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle"}


def op_name(node: fx.Node) -> str:
    """The name of the function or method a node calls ("" for other targets)."""
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _permuted(layout: tuple[int, ...] | None, node: fx.Node) -> tuple[int, ...] | None:
    """The layout after a permute/transpose node, or None when it cannot be followed."""
    dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
    dims = node.kwargs.get("dims", dims)
    if layout is None or not all(isinstance(d, int) for d in dims):
        return None
    dims = [d % 4 for d in dims]
    if op_name(node) != "permute":  # transpose(a, b): swap two dims
        if len(dims) != 2:
            return None
        order = list(range(4))
        order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        dims = order
    return tuple(layout[d] for d in dims) if sorted(dims) == [0, 1, 2, 3] else None


def _node_layout(node: fx.Node, inputs: list, modules: dict[str, nn.Module]) -> tuple[int, ...] | None:
    """Which logical dim each dim of a node's 4-D output holds; None when unknown."""
    name = op_name(node)
    if node.op != "call_module" and name in _PERMUTES:
        return _permuted(inputs[0] if inputs else None, node)
    if node.op != "call_module" and name in _RESHAPES:
        return None
    distinct = set(inputs)
    if node.op == "call_module" and not isinstance(modules[node.target], _LAYOUT_KEEPING):
        return IDENTITY if distinct <= {IDENTITY} else None  # a conv, pool or norm writes N, C, H, W
    return distinct.pop() if len(distinct) == 1 else (IDENTITY if not distinct else None)


def tensor_layouts(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[fx.Node, tuple[int, ...] | None]:
    """Follow the dim order of every tensor from the N, C, H, W input through permutes and reshapes."""
    layouts: dict[fx.Node, tuple[int, ...] | None] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            layouts[node] = IDENTITY
        elif node.op not in ("get_attr", "output"):
            layouts[node] = _node_layout(node, [layouts[a] for a in node.all_input_nodes if a in layouts], modules)
    return layouts


def layout_name(layout: tuple[int, ...] | None) -> str | None:
    """``"NCHW"`` or ``"NHWC"`` for a dim order a Zebra layer can tile; None for any other or an unknown one."""
    return _NAMES.get(layout)
