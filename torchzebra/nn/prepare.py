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
from torch import fx, nn

from ..config import ZebraConfig
from .activations import (ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES, NONNEGATIVE_FUNCTIONS,
                          NONNEGATIVE_MODULES)
from .dimorder import layout_name, op_name, tensor_layouts
from .layer import ZebraLayer
from .modes import training_mode

CONTAINER = "zebra"  # the ModuleDict of a prepared model that holds its ZebraLayers
_STATE = "prepared_state"  # attribute of the ZebraLayer container: deepcopy, pickle and torch.save keep it

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


def _aliases_shared_input(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when an activation works in place on a tensor that other operations also read."""
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if node.op == "call_module":
        in_place = getattr(modules[node.target], "inplace", False)
    else:
        in_place = op_name(node).endswith("_") or node.kwargs.get("inplace", False)
    return bool(in_place) and source is not None and len(source.users) > 1


def _make_layer(node: fx.Node, site: str, config: ZebraConfig, nonnegative: bool,
                layout: tuple[int, ...] | None) -> ZebraLayer:
    """The ZebraLayer of one call site with its settings; an input of unknown dim order is left unmasked."""
    settings = config.for_site(site)
    layer = ZebraLayer(site, block_size=settings.block_size, score=config.score, threshold=settings.threshold,
                       penalty=config.penalty, weight=settings.weight, active=settings.active, nonnegative=nonnegative)
    layer.layout = layout_name(layout)
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
    layouts = tensor_layouts(gm.graph, modules)
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


def set_penalty(model: nn.Module, enabled: bool) -> None:
    """Switch the penalty each layer computes in training on or off (off where nothing adds it to the loss,
    as with a zero lambda: ``zero_block_loss`` then finds no terms)."""
    for _, layer in zebra_layers(model):
        layer.penalized = enabled
