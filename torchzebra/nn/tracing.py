"""Tracing a CNN with torch.fx in both train and eval mode, with the model zoos' own tracing knowledge.

A submodule whose ``forward`` reads a training flag and calls no activation (stochastic depth, dropout) is
kept whole, so it reads the flag at run time. Where the graphs of the two modes still differ (timm's
norm+activation layers, a functional dropout in ``forward``), both are kept: ``prepare`` instruments each
and the prepared model runs the graph of its current mode. When timm is imported, the modules and functions
it registers as not traceable are kept opaque, as timm's own feature extraction does.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections import Counter
from fnmatch import fnmatchcase
from typing import Any, Callable

from torch import fx, nn

from .modes import training_mode

_PATH = "_zebra_module_path"  # attribute set on an exception raised while tracing a submodule


def zoo_notrace() -> tuple[tuple[type[nn.Module], ...], tuple[Callable[..., Any], ...]]:
    """The module types and functions that the imported model zoos register as not traceable (timm's lists)."""
    if "timm" not in sys.modules:
        return (), ()
    from timm.layers import get_notrace_functions, get_notrace_modules
    return tuple(get_notrace_modules()), tuple(f for f in get_notrace_functions() if callable(f))


class Tracer(fx.Tracer):
    """An FX tracer that keeps opaque the modules named by ``leaf_patterns``, the paths in ``whole`` and the
    module types in ``leaf_types``; it wraps the zoos' not-traceable functions, and notes which submodule's
    code failed when tracing fails."""

    def __init__(self, leaf_patterns: tuple[str, ...] = (), whole: frozenset[str] = frozenset(),
                 leaf_types: tuple[type[nn.Module], ...] = ()) -> None:
        # defaults: GraphModule's unpickling re-creates its tracer class without arguments
        super().__init__(autowrap_functions=zoo_notrace()[1])
        self.leaf_patterns = leaf_patterns
        self.whole = whole
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.whole or any(fnmatchcase(qualname, p) for p in self.leaf_patterns):
            return True
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as error:
            if not hasattr(error, _PATH):  # the innermost submodule is the one whose code failed
                setattr(error, _PATH, self.path_of_module(m))
            raise


def _zoo_leaf(model: nn.Module, path: str | None) -> type[nn.Module] | None:
    """The type of the innermost module on ``path`` (or above it) that a model zoo registers as not traceable."""
    zoo_types = zoo_notrace()[0]
    parts = path.split(".") if path else []
    for depth in range(len(parts), 0, -1):
        module = model.get_submodule(".".join(parts[:depth]))
        if isinstance(module, zoo_types):
            return type(module)
    return None


def _trace_error(model: nn.Module, error: Exception) -> ValueError:
    """The one-line error for a model that torch.fx cannot trace, naming the submodule whose code failed."""
    path = getattr(error, _PATH, None)
    where = f"inside {path} ({type(model.get_submodule(path)).__name__})" if path else "in its forward()"
    hint = f"ZebraConfig(leaf_modules=[{path!r}])" if path else "ZebraConfig(leaf_modules=['its.name'])"
    return ValueError(
        f"prepare() traces {type(model).__name__} with torch.fx and tracing failed {where}: {error}. "
        f"Data-dependent control flow cannot be traced: {hint} keeps that submodule whole (its activations "
        "are then not instrumented)."
    )


def trace_graph(model: nn.Module, training: bool, leaf_patterns: tuple[str, ...], whole: frozenset[str] = frozenset(),
                leaf_types: tuple[type[nn.Module], ...] = ()) -> tuple[fx.Graph, tuple[type[nn.Module], ...]]:
    """The graph of ``model`` traced with every submodule in train (or eval) mode (modes restored after), and
    the module types kept whole: a module that fails to trace and that a model zoo registers as not
    traceable (timm's ``Conv2dSame``, ``LiteMLA``) is kept whole, every other failure is a ``ValueError``."""
    while True:
        with training_mode(model, training):
            try:  # a fresh tracer per trace: one that has traced keeps per-call state (module call counts)
                return Tracer(leaf_patterns, whole, leaf_types).trace(model), leaf_types
            except Exception as error:  # FX raises many types; all mean the same thing to the user
                leaf = _zoo_leaf(model, getattr(error, _PATH, None))
                if leaf is None or leaf in leaf_types:
                    raise _trace_error(model, error) from error
                leaf_types += (leaf,)


def _reads_training_flag(module: nn.Module) -> bool:
    """True when the module's own ``forward`` reads a training flag (stochastic depth, functional dropout)."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return re.search(r"\btraining\b", source) is not None


def enclosing(node: fx.Node) -> str:
    """Dotted path of the module whose ``forward`` made a function call, with a trailing dot."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), "") if stack else ""
    return f"{path}." if path else ""


def _signature(graph: fx.Graph) -> Counter:
    """The operations of a graph as a multiset: what each node calls, where, on what kinds of inputs."""
    return Counter((node.op, str(node.target), enclosing(node),
                    str(fx.node.map_arg((node.args, node.kwargs), lambda arg: arg.op))) for node in graph.nodes)


def mode_dependent(a: fx.Graph, b: fx.Graph) -> list[str]:
    """Module paths whose traced operations differ between two graphs of one model (empty when equal)."""
    left, right = _signature(a), _signature(b)
    difference = (left - right) + (right - left)
    return sorted({path.rstrip(".") or "(top level)" for _, _, path, _ in difference})


def trace_modes(model: nn.Module, leaf_modules: tuple[str, ...],
                activation_paths: Callable[[fx.Graph], set[str]]) -> dict[bool, fx.Graph]:
    """The graph of each mode (``{True: train, False: eval}``): one graph object for both where the modes run
    the same operations. ``activation_paths`` names the module paths that hold an activation call."""
    first, leaf_types = trace_graph(model, model.training, leaf_modules)
    active = activation_paths(first)
    whole = frozenset(name for name, module in model.named_modules()
                      if name and name not in active and _reads_training_flag(module))
    current, _ = trace_graph(model, model.training, leaf_modules, whole, leaf_types)
    other, _ = trace_graph(model, not model.training, leaf_modules, whole, leaf_types)
    if not mode_dependent(current, other):
        return {True: current, False: current}
    return {model.training: current, not model.training: other}
