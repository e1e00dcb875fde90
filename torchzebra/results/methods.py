"""The one registry of methods: how each starts, what it changes, what it trains with, where its stage is kept,
and how reports name and draw it.

The workflows (which stages to train, in which folder, with which extensions), the run configuration (which
methods ``zebra run`` can train), the sweep (which settings to apply), the Slimming flows and the reports
(titles, colours, which models have masks to show) all read this table; a new method is one ``Method`` entry
given to ``register_method`` with the factory of its training extensions.

Layering: this module sits below the training loop (``training/``), where the ``Extension`` classes live, and
never imports it. An entry carries its factory as a plain callable (the stage's ``RunConfig`` -> its
``Extension`` objects), so a method defined outside the package names its own; the built-in methods whose
extensions are the training loop's own get theirs from ``training``, which binds them here when it loads
(``bind_extensions``). Only the workflows call factories, and they import ``training`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import ZebraError

STARTS = ("scratch", "baseline", "pruned")
# A method's training extensions: called with the stage's RunConfig, returns its training.extensions.Extension objects.
ExtensionFactory = Callable[[Any], Sequence[Any]]
BASELINE = "dense"  # the method every reduction is measured against
ZEBRA = "zebra"  # Zebra fine-tuned from the baseline; also what a lone `zebra train` stage with masks is filed under
SPARSE_STAGE = "slim-sparse"  # the model a `pruned` start prunes, trained first
PRUNED_STAGE = "slim-pruned"  # the pruned model before fine-tuning
CALIBRATED = "zebra-calibrated"  # what `zebra calibrate` makes of a trained model


@dataclass(frozen=True)
class Method:
    """One way of obtaining a model.

    ``start``: ``scratch`` trains with the ``train`` section from random weights, ``baseline`` fine-tunes the
    dense baseline with the ``finetune`` section, ``pruned`` fine-tunes the Slimming-pruned model.
    ``zebra_masks``: trained with Zebra's masks and penalty. ``settings``: what the method changes on top of the
    run's settings (dotted keys). ``final``: a finished model (else an intermediate stage, tabled but not
    plotted). ``sweep``/``run``: ``zebra sweep``/``zebra run`` can train it. ``folder``: the stage folder
    ``zebra run`` and ``zebra slim`` train it in (default: its name for the methods they train, else None).
    ``extensions``: the factory of the training extensions it adds to the loop (beside Zebra's, which
    ``zebra_masks`` brings), or None.
    """

    name: str
    title: str
    colour: str
    start: str
    zebra_masks: bool
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    final: bool = True
    sweep: bool = True
    run: bool = False
    folder: str | None = None
    extensions: ExtensionFactory | None = None

    @property
    def stage(self) -> str:
        """The folder a run trains this method in (``folder``); asking it of a method trained in none is a bug."""
        if self.folder is None:
            raise KeyError(f"method {self.name!r} is not trained in a stage folder of its own")
        return self.folder

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ZebraError(f"method {self.name!r}: start={self.start!r} is invalid: use one of {', '.join(STARTS)}")
        if self.folder is None and (self.run or (self.start == "pruned" and self.final)):  # zebra run / zebra slim
            object.__setattr__(self, "folder", self.name)


METHODS: dict[str, Method] = {}
OTHER_COLOUR = "#8c564b"  # a method this version does not know (read from a newer file)


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (a name or a title already taken is a ZebraError) and return it."""
    if method.name in METHODS:
        raise ZebraError(f"method {method.name!r} is registered already: give the new method another name")
    if method.title in {m.title for m in METHODS.values()}:
        raise ZebraError(f"method {method.name!r}: title {method.title!r} is taken: reports need one per method")
    METHODS[method.name] = method
    return method


def bind_extensions(name: str, factory: ExtensionFactory) -> None:
    """Give the registered method ``name`` the factory of its training extensions (how ``training`` supplies
    the built-in methods' own, from above this module)."""
    METHODS[name] = replace(METHODS[name], extensions=factory)


def method_extensions(name: str, config: Any) -> list[Any]:
    """The training extensions of method ``name`` for a stage's ``config`` (none without a factory)."""
    factory = METHODS[name].extensions
    return list(factory(config)) if factory is not None else []


def method_title(name: str) -> str:
    """The title of a method in reports (an unknown name is shown as it is)."""
    return METHODS[name].title if name in METHODS else name


def method_colour(name: str) -> str:
    """The colour of a method in plots."""
    return METHODS[name].colour if name in METHODS else OTHER_COLOUR


def run_methods() -> tuple[str, ...]:
    """What ``zebra run`` can train beside the dense baseline (``run.method``)."""
    return tuple(name for name, method in METHODS.items() if method.run)


def sweep_methods() -> tuple[str, ...]:
    """What ``zebra sweep`` can train at its grid's points (``sweep.methods``)."""
    return tuple(name for name, method in METHODS.items() if method.sweep)


def slim_flows() -> dict[str, tuple[str, ...]]:
    """``zebra slim --flow``: which finished methods each Network Slimming flow fine-tunes from the pruned model,
    in order: one flow per such method, ``joint`` (sparsity trained with Zebra) the ones with masks, ``compare``
    all of them (after the dense baseline and Zebra)."""
    pruned = tuple(name for name, method in METHODS.items() if method.start == "pruned" and method.final)
    return {**{name: (name,) for name in pruned}, "joint": tuple(name for name in pruned if METHODS[name].zebra_masks),
            "compare": pruned}


for _method in (
    Method(BASELINE, "dense baseline", "#444444", "scratch", False, "the dense baseline", sweep=False,
           folder="baseline"),
    Method("l1", "L1 activation reg.", "#1f77b4", "baseline", True,
           "element-wise L1 activation regularisation + ZVC (Georgiadis, CVPR 2019), fine-tuned from the baseline",
           {"zebra.block_size": 1, "zebra.penalty": "l1", "zebra.threshold": 0.0, "zebra.density": None}),
    Method(ZEBRA, "Zebra", "#d62728", "baseline", True, "Zebra fine-tuned from the baseline", run=True),
    Method("zebra-scratch", "Zebra from scratch", "#ff7f0e", "scratch", True,
           "Zebra trained from scratch with the baseline's recipe", run=True, folder="zebra"),
    Method("dense-retrained", "dense, retrained (control)", "#7f7f7f", "baseline", False,
           "the dense baseline trained again with the fine-tune recipe and no masks: what the extra epochs alone give"),
    Method("slim", "Slimming", "#2ca02c", "pruned", False, "Network Slimming: sparsity-train, prune, fine-tune"),
    Method("slim-zebra", "Slimming+Zebra", "#9467bd", "pruned", True,
           "the Slimming-pruned model fine-tuned with Zebra"),
    Method(CALIBRATED, "Zebra calibrated, no training", "#e377c2", "baseline", True,
           "per-layer thresholds searched on a few hundred training images of a trained model, no training",
           sweep=False),
    Method(SPARSE_STAGE, "sparsity-trained, before pruning", "#98df8a", "scratch", False,
           "the BatchNorm-sparsity-trained model before pruning", final=False, sweep=False, folder="sparse"),
    Method(PRUNED_STAGE, "pruned, before fine-tuning", "#bcbd22", "pruned", False,
           "the pruned model before fine-tuning", final=False, sweep=False),
):
    register_method(_method)
