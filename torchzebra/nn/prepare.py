"""prepare / remove: instrument every activation call site of a CNN with a ZebraLayer, and undo it.

Like ``torch.ao.quantization``'s FX mode, ``prepare`` traces the model with ``torch.fx`` and inserts one
``ZebraLayer`` after each activation *call*: a module called twice (torchvision's ResNet reuses one
``nn.ReLU``) gives two layers, and ``F.relu``/``torch.relu``/``x.relu()`` calls inside ``forward`` are
found too. The traced graph also says how many operations read each map (its consumers).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable

from torch import fx, nn

from .activations import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    NONNEGATIVE_FUNCTIONS,
    NONNEGATIVE_MODULES,
)
from .config import ZebraConfig
from .dimorder import NOT_4D, PARAMETER, layout_name, op_name, tensor_layouts
from .layer import ZebraLayer
from .modegraph import ModeGraphModule
from .state import CONTAINER, STATE, PreparedState, is_prepared, model_device, prepared_state
from .tracing import enclosing, trace_modes

_METADATA_READS = {"size", "dim", "numel", "shape", "dtype", "device"}


def _activation_kind(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, bool] | None:
    """(short name, output is non-negative) when ``node`` calls an activation, else None."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, ACTIVATION_MODULES):
            return node.target, isinstance(module, NONNEGATIVE_MODULES)
    elif node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS:
        return enclosing(node) + ACTIVATION_FUNCTIONS[node.target], node.target in NONNEGATIVE_FUNCTIONS
    elif node.op == "call_method" and node.target in ACTIVATION_METHODS:
        return enclosing(node) + node.target.rstrip("_"), ACTIVATION_METHODS[node.target]
    return None


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


def _activation_paths(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[str]:
    """Every module path that contains an activation call site, its ancestors included."""
    paths = set()
    for node in graph.nodes:
        kind = _activation_kind(node, modules)
        if kind is not None:
            parts = kind[0].split(".")[:-1]
            paths.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    return paths


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
    if layout == NOT_4D:  # not a map: the layer passes it through
        return layer
    layer.layout = layout_name(layout)
    if layout == PARAMETER:
        layer.skipped = "its input is computed from parameters and constants only, not from an activation map"
    elif layer.layout is None:
        layer.skipped = ("the dim order of its input is unknown (after a reshape or an unusual permute), so its "
                         "blocks cannot be told from its channels: left unmasked and not counted")
    return layer


def _unique_key(site: str, taken: set[str]) -> str:
    key = re.sub(r"\W", "_", site)
    while key in taken:
        key += "_"
    taken.add(key)
    return key


def _insert_layers(graph: fx.Graph, modules: dict[str, nn.Module], config: ZebraConfig,
                   container: nn.ModuleDict) -> list[str]:
    """Insert a ZebraLayer call after every activation call of ``graph``: the container's layer of that site
    where it has one (the other mode's graph, a saved model), else a new one. Returns the sites in order."""
    seen: dict[str, int] = {}
    keys: set[str] = set()
    layouts = tensor_layouts(graph, modules)
    sites = []
    for node in list(graph.nodes):
        kind = _activation_kind(node, modules)
        if kind is None:
            continue
        base, nonnegative = kind
        calls = seen.get(base, 0)
        seen[base] = calls + 1
        site = base if calls == 0 else f"{base}:{calls}"
        key = _unique_key(site, keys)
        aliased = _aliases_shared_input(node, modules)
        fresh = key not in container
        if fresh:
            layout = layouts.get(node.args[0]) if node.args else None
            container[key] = _make_layer(node, site, config, nonnegative, layout)
        with graph.inserting_after(node):
            masked = graph.call_module(f"{CONTAINER}.{key}", (node,))
        node.replace_all_uses_with(masked, delete_user_cb=lambda user: user is not masked)
        layouts[masked] = layouts.get(node)  # a layer keeps its map's order: for an activation right after it
        if fresh:
            container[key].consumers = _consumers(masked)
        # masked out of place if it aliases a shared input in either mode
        container[key].inplace = (fresh or container[key].inplace) and not aliased
        sites.append(site)
    return sites


def _check_same_sites(sites: dict[bool, list[str]], model: nn.Module) -> None:
    """Refuse a model whose train and eval graphs call different activations (one set of layers serves both)."""
    if sites[True] == sites[False]:
        return
    only = sorted(set(sites[True]) ^ set(sites[False])) or ["(the same sites in another order)"]
    raise ValueError(
        f"{type(model).__name__}.forward() calls other activations in train and eval mode ({', '.join(only)}), "
        "so one set of Zebra layers cannot serve both modes. Name the submodule that holds them in "
        "ZebraConfig(leaf_modules=[...]) to keep it whole (its activations are then not instrumented)."
    )


def _install_targets(gm: fx.GraphModule, model: nn.Module, graph: fx.Graph) -> None:
    """Give ``gm`` the submodules, parameters and buffers that ``graph`` (the other mode's) reads."""
    for node in graph.nodes:
        if node.op not in ("get_attr", "call_module") or node.target.startswith(f"{CONTAINER}."):
            continue
        *path, name = node.target.split(".")
        owner, source = gm, model
        for part in path:
            source = getattr(source, part)
            if part not in owner._modules:
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            setattr(owner, name, getattr(source, name))


def instrument(model: nn.Module, config: ZebraConfig, container: nn.ModuleDict | None = None) -> fx.GraphModule:
    """Trace ``model`` in both modes and insert its ZebraLayers (new ones, or those of ``container``): a
    GraphModule, or a ModeGraphModule where the two modes run different operations."""
    modules = dict(model.named_modules())
    graphs = trace_modes(model, config.leaf_modules, lambda graph: _activation_paths(graph, modules))
    dual = graphs[True] is not graphs[False]
    name, graph = type(model).__name__, graphs[model.training]
    gm = ModeGraphModule(model, graph, name, _reduce) if dual else fx.GraphModule(model, graph, name)
    if hasattr(gm, CONTAINER):
        raise ValueError(f"{type(model).__name__} already has an attribute {CONTAINER!r}, which prepare() needs")
    layers = container if container is not None else nn.ModuleDict()
    gm.add_module(CONTAINER, layers)
    modes = (False, True) if dual else (True,)
    sites = {mode: _insert_layers(graphs[mode], modules, config, layers) for mode in modes}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no activation to instrument: prepare() looks for calls of "
            f"{', '.join(t.__name__ for t in ACTIVATION_MODULES)} modules and of "
            f"{', '.join(sorted(set(ACTIVATION_FUNCTIONS.values())))} functions in forward()"
        )
    if dual:
        _check_same_sites(sites, model)
        _install_targets(gm, model, graphs[not model.training])
        gm.mode_graphs = graphs
    gm.recompile()
    layers.to(model_device(model))
    gm.training = model.training  # the user's modules (shared with gm) keep their own modes
    if container is None:
        layers.train(model.training)
        setattr(layers, STATE, PreparedState(model, config))
    return gm


def _reduce(model: ModeGraphModule) -> tuple[Callable[..., fx.GraphModule], tuple[Any, ...]]:
    """How a ModeGraphModule pickles: as its plain model, its settings and its ZebraLayers. Loading traces the model
    again (as GraphModule's own unpickling does from its code) and puts the saved layers back."""
    state = prepared_state(model)
    return _rebuild, (state.original, state.config, getattr(model, CONTAINER), model.training)


def _rebuild(original: nn.Module, config: ZebraConfig, container: nn.ModuleDict, training: bool) -> fx.GraphModule:
    """A prepared model rebuilt from its plain model, settings and (saved) ZebraLayers."""
    model = instrument(original, config, container)
    model.training = training
    return model


def prepare(model: nn.Module, config: ZebraConfig | None = None) -> fx.GraphModule:
    """Return ``model`` instrumented with one ZebraLayer per activation call site.

    The returned module shares parameters and buffers with ``model``; ``remove`` gives the original back.
    Raises ``ValueError`` when the model cannot be traced or has no activation to instrument, and warns
    when an activation map is left unmasked and uncounted (naming the sites and why).
    """
    config = config or ZebraConfig()
    if is_prepared(model):
        raise ValueError("this model is already prepared: call torchzebra.remove(model) first, or use it as it is")
    gm = instrument(model, config)
    uncounted = [f"{layer.site}: {layer.skipped}" for layer in getattr(gm, CONTAINER).values() if layer.skipped]
    uncounted += [f"the activations inside {path} ({type(module).__name__}): it is kept whole (leaf_modules, or a "
                  "module its model zoo registers as not traceable)" for path, module in _kept_whole(gm)]
    if uncounted:
        warnings.warn(f"{type(model).__name__}: activation maps left unmasked and not counted: {'; '.join(uncounted)}",
                      stacklevel=2)
    return gm


def _kept_whole(gm: fx.GraphModule) -> list[tuple[str, nn.Module]]:
    """The submodules called whole (not traced into) that hold activation modules, which are then not ours."""
    modules = dict(gm.named_modules())
    return [(node.target, modules[node.target]) for node in gm.graph.nodes
            if node.op == "call_module" and not isinstance(modules[node.target], (ACTIVATION_MODULES, ZebraLayer))
            and any(isinstance(m, ACTIVATION_MODULES) for m in modules[node.target].modules())]
