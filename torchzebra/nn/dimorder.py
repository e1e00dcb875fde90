"""The dim order of every tensor of a traced CNN: which logical dim (N, C, H, W) each dim holds, followed
from the input through permutes and transposes; a reshape makes it unknown, a conv, pool or norm writes
N, C, H, W again, and a parameter broadcast over a map (a layer scale) keeps the map's order."""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from .activations import ACTIVATION_MODULES

IDENTITY = (0, 1, 2, 3)  # which logical dim (N, C, H, W) each dim of a 4-D tensor holds
PARAMETER = ()  # a tensor computed from parameters and constants only (a layer scale, a reshaped weight)
NOT_4D = (-1,)  # a tensor of another rank computed from the maps (flattened features, a pooled vector)
_MAP_WRITERS = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd,
                nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)
_MAP_WRITING_FUNCTIONS = {F.conv2d, F.conv_transpose2d, F.batch_norm, F.group_norm, F.instance_norm, F.avg_pool2d,
                          F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.lp_pool2d}
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


def _reshaped_rank(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    """The rank of a flatten/view/reshape output of a 4-D map where the call says it, else None."""
    if node.op == "call_module":
        module = modules[node.target]
        return module.start_dim % 4 + 1 if module.end_dim in (-1, 3) else None
    name, args = op_name(node), node.args[1:]
    if name == "flatten":
        start = node.kwargs.get("start_dim", args[0] if args else 0)
        end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        return start % 4 + 1 if isinstance(start, int) and end in (-1, 3) else None
    if name in ("view", "reshape"):
        shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        single_proxy = len(shape) == 1 and isinstance(shape[0], fx.Node)  # a torch.Size, or one int: unknown
        return None if single_proxy or not shape else len(shape)
    return None


def _writes_map(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for a conv, pool or norm: its output holds N, C, H, W whatever order its input had."""
    if node.op == "call_module":
        return isinstance(modules[node.target], _MAP_WRITERS)
    return node.op == "call_function" and node.target in _MAP_WRITING_FUNCTIONS


def _node_layout(node: fx.Node, inputs: list, modules: dict[str, nn.Module]) -> tuple[int, ...] | None:
    """Which logical dim each dim of a node's 4-D output holds; None when unknown, PARAMETER for a tensor made of
    parameters and constants only, NOT_4D for one of another rank computed from the maps."""
    maps = [layout for layout in inputs if layout not in (PARAMETER, NOT_4D)]  # a broadcast keeps the map's order
    if not maps:
        return NOT_4D if NOT_4D in inputs else PARAMETER
    if _writes_map(node, modules):
        return IDENTITY
    name = op_name(node)
    if node.op != "call_module" and name in _PERMUTES:
        return _permuted(inputs[0], node)
    if (node.op != "call_module" and name in _RESHAPES) or isinstance(modules.get(node.target), nn.Flatten):
        rank = _reshaped_rank(node, modules)
        return NOT_4D if rank is not None and rank != 4 else None
    distinct = set(maps)
    if node.op == "call_module" and not isinstance(modules[node.target], _LAYOUT_KEEPING):
        return IDENTITY if distinct <= {IDENTITY} else None  # a module kept whole: N, C, H, W in, N, C, H, W out
    return distinct.pop() if len(distinct) == 1 else None


def tensor_layouts(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[fx.Node, tuple[int, ...] | None]:
    """Follow the dim order of every tensor from the N, C, H, W input through permutes and reshapes."""
    layouts: dict[fx.Node, tuple[int, ...] | None] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            layouts[node] = IDENTITY
        elif node.op != "output":
            layouts[node] = _node_layout(node, [layouts[a] for a in node.all_input_nodes if a in layouts], modules)
    return layouts


def layout_name(layout: tuple[int, ...] | None) -> str | None:
    """``"NCHW"`` or ``"NHWC"`` for a dim order a Zebra layer can tile; None for any other or an unknown one."""
    return _NAMES.get(layout)
