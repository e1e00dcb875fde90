"""prepare / remove: instrument every activation call site of a CNN with a ZebraLayer, and undo it.

Like ``torch.ao.quantization``'s FX mode, ``prepare`` traces the model with ``torch.fx`` and inserts one
``ZebraLayer`` after each activation *call*: a module called twice (torchvision's ResNet reuses one
``nn.ReLU``) gives two layers, and ``F.relu``/``torch.relu``/``x.relu()`` calls inside ``forward`` are
found too. The traced graph also says how many operations read each map (its consumers).
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..config import ZebraConfig
from .layer import ZebraLayer
from .modes import training_mode

CONTAINER = "zebra"  # the ModuleDict of a prepared model that holds its ZebraLayers
_STATE = "prepared_state"  # attribute of the ZebraLayer container: deepcopy, pickle and torch.save keep it

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
_METADATA_READS = {"size", "dim", "numel", "shape", "dtype", "device"}


def _activation_kind(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, bool] | None:
    """(short name, output is non-negative) when ``node`` calls an activation, else None."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, ACTIVATION_MODULES):
            return node.target, isinstance(module, NONNEGATIVE_MODULES)
    elif node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
        return _enclosing(node) + ACTIVATION_FUNCTIONS[node.target], node.target in NONNEGATIVE_FUNCTIONS
    elif node.op == "call_method" and node.target in ACTIVATION_METHODS:
        return _enclosing(node) + node.target.rstrip("_"), ACTIVATION_METHODS[node.target]
    return None


def _enclosing(node: fx.Node) -> str:
    """Dotted path of the module whose ``forward`` made a function call, with a trailing dot."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), "") if stack else ""
    return f"{path}." if path else ""


def _consumers(node: fx.Node) -> int:
    """Operations that read the map ``node`` produces; shape queries read no data."""
    readers = 0
    for user in node.users:
        if user.op == "call_method" and user.target in _METADATA_READS:
            continue
        if user.op == "call_function" and user.target is getattr and user.args[1] in _METADATA_READS:
            continue
        readers += 1
    return max(readers, 1)


class _Tracer(fx.Tracer):
    """An FX tracer that keeps the modules named by ``leaf_patterns`` and the paths in ``whole`` opaque."""

    def __init__(self, leaf_patterns: tuple[str, ...] = (), whole: frozenset[str] = frozenset()) -> None:
        super().__init__()  # defaults: GraphModule's unpickling re-creates its tracer class without arguments
        self.leaf_patterns = leaf_patterns
        self.whole = whole

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.whole or any(fnmatchcase(qualname, p) for p in self.leaf_patterns):
            return True
        return super().is_leaf_module(m, qualname)


def _trace_graph(model: nn.Module, tracer: _Tracer, training: bool) -> fx.Graph:
    """The graph of ``model`` traced with every submodule in train (or eval) mode; modes restored after."""
    with training_mode(model, training):
        try:
            return tracer.trace(model)
        except Exception as error:  # FX raises many types; all mean the same thing to the user
            raise ValueError(
                f"prepare() traces {type(model).__name__} with torch.fx and tracing failed: {error}. "
                "Data-dependent control flow in forward() cannot be traced: name the submodule that has it in "
                "ZebraConfig(leaf_modules=['its.name']) so it is kept whole (its activations are then not "
                "instrumented)."
            ) from error


def _reads_training_flag(module: nn.Module) -> bool:
    """True when the module's own ``forward`` reads a training flag (stochastic depth, functional dropout)."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return re.search(r"\btraining\b", source) is not None


def _activation_paths(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[str]:
    """Every module path that contains an activation call site, its ancestors included."""
    paths = set()
    for node in graph.nodes:
        kind = _activation_kind(node, modules)
        if kind is not None:
            parts = kind[0].split(".")[:-1]
            paths.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    return paths


def _mode_dependent(a: fx.Graph, b: fx.Graph) -> list[str]:
    """Module paths whose traced operations differ between two graphs of one model (empty when equal)."""
    def signature(graph: fx.Graph) -> Counter:
        return Counter((node.op, str(node.target), _enclosing(node), str(fx.node.map_arg((node.args, node.kwargs),
                        lambda arg: arg.op))) for node in graph.nodes)
    difference = (signature(a) - signature(b)) + (signature(b) - signature(a))
    return sorted({path.rstrip(".") or "(top level)" for _, _, path, _ in difference})


def _trace(model: nn.Module, config: ZebraConfig) -> fx.GraphModule:
    """Trace ``model`` so that train/eval-dependent Python behaves as in the original model in both modes.

    Submodules that read a training flag and hold no activation are kept whole (their own ``forward`` runs
    and reads the flag at run time); a model whose graph still differs between the modes is refused.
    """
    first = _trace_graph(model, _Tracer(config.leaf_modules), model.training)
    active = _activation_paths(first, dict(model.named_modules()))
    whole = frozenset(name for name, module in model.named_modules()
                      if name and name not in active and _reads_training_flag(module))
    tracer = _Tracer(config.leaf_modules, whole)
    graph = _trace_graph(model, tracer, model.training)
    # a fresh tracer: one that has traced keeps per-call state (module call counts) and names nodes differently
    differing = _mode_dependent(graph, _trace_graph(model, _Tracer(config.leaf_modules, whole), not model.training))
    if differing:
        raise ValueError(
            f"{type(model).__name__}.forward() runs other operations in train and eval mode inside "
            f"{', '.join(differing)}, which also call activations, so one traced graph cannot serve both modes. "
            "Name that submodule in ZebraConfig(leaf_modules=[...]) to keep it whole (its activations are then "
            "not instrumented), or move the mode-dependent part into a submodule of its own."
        )
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


_IDENTITY = (0, 1, 2, 3)  # which logical dim (N, C, H, W) each dim of a 4-D tensor holds
_LAYOUTS = {_IDENTITY: "NCHW", (0, 2, 3, 1): "NHWC"}
_LAYOUT_KEEPING = (nn.Linear, nn.LayerNorm, nn.Identity, nn.Dropout, nn.AlphaDropout, *ACTIVATION_MODULES)
_PERMUTES = {"permute", "transpose", "swapaxes", "swapdims"}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "movedim", "moveaxis",
             "view_as", "reshape_as", "expand", "expand_as", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle"}


def _op_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _permuted(layout: tuple[int, ...] | None, node: fx.Node) -> tuple[int, ...] | None:
    """The layout after a permute/transpose node, or None when it cannot be followed."""
    dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
    dims = node.kwargs.get("dims", dims)
    if layout is None or not all(isinstance(d, int) for d in dims):
        return None
    dims = [d % 4 for d in dims]
    if _op_name(node) != "permute":  # transpose(a, b): swap two dims
        if len(dims) != 2:
            return None
        order = list(range(4))
        order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        dims = order
    return tuple(layout[d] for d in dims) if sorted(dims) == [0, 1, 2, 3] else None


def _node_layout(node: fx.Node, inputs: list, modules: dict[str, nn.Module]) -> tuple[int, ...] | None:
    """Which logical dim each dim of a node's 4-D output holds; None when unknown."""
    name = _op_name(node)
    if node.op != "call_module" and name in _PERMUTES:
        return _permuted(inputs[0] if inputs else None, node)
    if node.op != "call_module" and name in _RESHAPES:
        return None
    distinct = set(inputs)
    if node.op == "call_module" and not isinstance(modules[node.target], _LAYOUT_KEEPING):
        return _IDENTITY if distinct <= {_IDENTITY} else None  # a conv, pool or norm writes N, C, H, W
    return distinct.pop() if len(distinct) == 1 else (_IDENTITY if not distinct else None)


def _layouts(graph: fx.Graph, modules: dict[str, nn.Module]) -> dict[fx.Node, tuple[int, ...] | None]:
    """Follow the dim order of every tensor from the N, C, H, W input through permutes and reshapes."""
    layouts: dict[fx.Node, tuple[int, ...] | None] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            layouts[node] = _IDENTITY
        elif node.op not in ("get_attr", "output"):
            layouts[node] = _node_layout(node, [layouts[a] for a in node.all_input_nodes if a in layouts], modules)
    return layouts


def _aliases_shared_input(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when an activation works in place on a tensor that other operations also read."""
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if node.op == "call_module":
        in_place = getattr(modules[node.target], "inplace", False)
    else:
        in_place = _op_name(node).endswith("_") or node.kwargs.get("inplace", False)
    return bool(in_place) and source is not None and len(source.users) > 1


def _make_layer(node: fx.Node, site: str, config: ZebraConfig, nonnegative: bool,
                layout: tuple[int, ...] | None) -> ZebraLayer:
    """The ZebraLayer of one call site with its settings; an input of unknown dim order is left unmasked."""
    settings = config.for_site(site)
    layer = ZebraLayer(site, block_size=settings.block_size, score=config.score, threshold=settings.threshold,
                       penalty=config.penalty, weight=settings.weight, active=settings.active, nonnegative=nonnegative)
    layer.layout = _LAYOUTS.get(layout)
    if layer.layout is None:
        layer.skipped = ("the dim order of its input is unknown (after a reshape or an unusual permute), so its "
                         "blocks cannot be told from its channels: left unmasked and not counted")
    return layer


def _unique_key(site: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", site)
    while key in taken:
        key += "_"
    taken.add(key)
    return key


def prepare(model: nn.Module, config: ZebraConfig | None = None) -> fx.GraphModule:
    """Return ``model`` instrumented with one ZebraLayer per activation call site.

    The returned module shares parameters and buffers with ``model``; ``remove`` gives the original back.
    Raises ``ValueError`` when the model cannot be traced or has no activation to instrument.
    """
    config = config or ZebraConfig()
    if is_prepared(model):
        raise ValueError("this model is already prepared: call torchzebra.remove(model) first, or use it as it is")
    gm = _trace(model, config)
    if hasattr(gm, CONTAINER):
        raise ValueError(f"{type(model).__name__} already has an attribute {CONTAINER!r}, which prepare() needs")
    modules = dict(gm.named_modules())
    container = nn.ModuleDict()
    gm.add_module(CONTAINER, container)
    seen: dict[str, int] = {}
    keys: set[str] = set()
    layouts = _layouts(gm.graph, modules)
    for node in list(gm.graph.nodes):
        kind = _activation_kind(node, modules)
        if kind is None:
            continue
        base, nonnegative = kind
        calls = seen.get(base, 0)
        seen[base] = calls + 1
        site = base if calls == 0 else f"{base}:{calls}"
        key = _unique_key(site, keys)
        layer = _make_layer(node, site, config, nonnegative, layouts.get(node.args[0]) if node.args else None)
        container[key] = layer
        with gm.graph.inserting_after(node):
            masked = gm.graph.call_module(f"{CONTAINER}.{key}", (node,))
        node.replace_all_uses_with(masked, delete_user_cb=lambda user: user is not masked)
        layer.consumers = _consumers(masked)
        layer.inplace = not _aliases_shared_input(node, modules)
    if not container:
        raise ValueError(
            f"{type(model).__name__} has no activation to instrument: prepare() looks for calls of "
            f"{', '.join(t.__name__ for t in ACTIVATION_MODULES)} modules and of "
            f"{', '.join(sorted(set(ACTIVATION_FUNCTIONS.values())))} functions in forward()"
        )
    gm.recompile()
    container.to(model_device(model))
    gm.training = model.training  # the user's modules (shared with gm) keep their own modes
    container.train(model.training)
    setattr(container, _STATE, PreparedState(model, config))
    return gm


@dataclass(frozen=True)
class PreparedState:
    """What ``prepare`` remembers of a model: the plain model it was made from and its ZebraConfig."""

    original: nn.Module
    config: ZebraConfig


def prepared_module(model: nn.Module, caller: str = "this function") -> fx.GraphModule:
    """The prepared model itself, or the one a ``torch.compile`` wrapper holds (same modules and weights);
    any other model is a ``ValueError`` naming ``caller``."""
    inner = _unwrapped(model)
    if not is_prepared(inner):
        raise ValueError(f"{caller}() takes a model returned by torchzebra.prepare() (or torch.compile of one); "
                         "this one is not prepared")
    return inner


def prepared_state(model: nn.Module, caller: str = "this function") -> PreparedState:
    """The state of a prepared (possibly compiled) model; any other model is a ``ValueError`` naming ``caller``."""
    return getattr(getattr(prepared_module(model, caller), CONTAINER), _STATE)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper runs, else the model itself."""
    return getattr(model, "_orig_mod", model) if not isinstance(model, fx.GraphModule) else model


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


def is_prepared(model: nn.Module) -> bool:
    """True for a model returned by ``prepare``, or ``torch.compile`` of one."""
    model = _unwrapped(model)
    return isinstance(model, fx.GraphModule) and hasattr(getattr(model, CONTAINER, None), _STATE)


def remove(model: nn.Module) -> nn.Module:
    """Return the plain model a prepared one was made from (same object, with the current weights)."""
    original = prepared_state(model, "remove").original
    original.training = model.training  # the submodules are shared and keep their own modes
    return original


def plain_model(model: nn.Module) -> nn.Module:
    """The un-instrumented model of a possibly prepared one (a prepared model shares its modules with it)."""
    return remove(model) if is_prepared(model) else model


def zebra_layers(model: nn.Module) -> list[tuple[str, ZebraLayer]]:
    """The (call-site name, layer) pairs of a prepared model, in execution order."""
    return [(layer.site, layer) for layer in getattr(prepared_module(model, "zebra_layers"), CONTAINER).values()]


def set_masking(model: nn.Module, enabled: bool) -> None:
    """Switch the block masks of every layer on or off (off: the model computes the original outputs)."""
    for _, layer in zebra_layers(model):
        layer.masking = enabled
