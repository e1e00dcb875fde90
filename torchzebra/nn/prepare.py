"""prepare / remove: instrument every activation call site of a CNN with a ZebraLayer, and undo it.

Like ``torch.ao.quantization``'s FX mode, ``prepare`` traces the model with ``torch.fx`` and inserts one
``ZebraLayer`` after each activation *call*: a module called twice (torchvision's ResNet reuses one
``nn.ReLU``) gives two layers, and ``F.relu``/``torch.relu``/``x.relu()`` calls inside ``forward`` are
found too. The traced graph also says how many operations read each map (its consumers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..config import ZebraConfig
from .layer import ZebraLayer

CONTAINER = "zebra"  # the ModuleDict of a prepared model that holds its ZebraLayers
_STATE = "zebra_state"  # GraphModule.meta key of the PreparedState (meta survives deepcopy)

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
    """An FX tracer that keeps the modules named by ``leaf_modules`` patterns opaque."""

    def __init__(self, leaf_patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.leaf_patterns = leaf_patterns

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if any(fnmatchcase(qualname, p) for p in self.leaf_patterns):
            return True
        return super().is_leaf_module(m, qualname)


def _trace(model: nn.Module, config: ZebraConfig) -> fx.GraphModule:
    tracer = _Tracer(config.leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # FX raises many types; all mean the same thing to the user
        raise ValueError(
            f"prepare() traces {type(model).__name__} with torch.fx and tracing failed: {error}. "
            "Data-dependent control flow in forward() cannot be traced: name the submodule that has it in "
            "ZebraConfig(leaf_modules=['its.name']) so it is kept whole (its activations are then not instrumented)."
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


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
    for node in list(gm.graph.nodes):
        kind = _activation_kind(node, modules)
        if kind is None:
            continue
        base, nonnegative = kind
        calls = seen.get(base, 0)
        seen[base] = calls + 1
        site = base if calls == 0 else f"{base}:{calls}"
        key = _unique_key(site, keys)
        settings = config.for_site(site)
        layer = ZebraLayer(
            site,
            block_size=settings.block_size,
            score=config.score,
            threshold=settings.threshold,
            weight=settings.weight,
            active=settings.active,
            nonnegative=nonnegative,
            inplace=True,  # the activation's output is read by this layer alone
        )
        container[key] = layer
        with gm.graph.inserting_after(node):
            masked = gm.graph.call_module(f"{CONTAINER}.{key}", (node,))
        node.replace_all_uses_with(masked, delete_user_cb=lambda user: user is not masked)
        layer.consumers = _consumers(masked)
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
    gm.meta[_STATE] = PreparedState(model, config)
    return gm


@dataclass(frozen=True)
class PreparedState:
    """What ``prepare`` remembers of a model: the plain model it was made from and its ZebraConfig."""

    original: nn.Module
    config: ZebraConfig


def prepared_state(model: nn.Module, caller: str = "this function") -> PreparedState:
    """The state of a prepared model; any other model is a ``ValueError`` naming ``caller``."""
    if not is_prepared(model):
        raise ValueError(f"{caller}() takes a model returned by torchzebra.prepare(); this one is not prepared")
    return model.meta[_STATE]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


def is_prepared(model: nn.Module) -> bool:
    """True for a model returned by ``prepare``."""
    return isinstance(model, fx.GraphModule) and _STATE in model.meta


def remove(model: nn.Module) -> nn.Module:
    """Return the plain model a prepared one was made from (same object, with the current weights)."""
    original = prepared_state(model, "remove").original
    original.train(model.training)
    return original


def plain_model(model: nn.Module) -> nn.Module:
    """The un-instrumented model of a possibly prepared one (a prepared model shares its modules with it)."""
    return remove(model) if is_prepared(model) else model


def zebra_layers(model: nn.Module) -> list[tuple[str, ZebraLayer]]:
    """The (call-site name, layer) pairs of a prepared model, in execution order."""
    prepared_state(model, "zebra_layers")
    return [(layer.site, layer) for layer in getattr(model, CONTAINER).values()]


def set_masking(model: nn.Module, enabled: bool) -> None:
    """Switch the block masks of every layer on or off (off: the model computes the original outputs)."""
    for _, layer in zebra_layers(model):
        layer.masking = enabled
