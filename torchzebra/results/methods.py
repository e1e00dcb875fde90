"""The one registry of methods: how each starts, what it changes, and how reports name and draw it.

The engine (which stages to train), the sweep (which settings to apply) and the report (titles, colours,
which models have masks to show) all read this table; a new method is one new entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

STARTS = ("scratch", "baseline", "pruned")


@dataclass(frozen=True)
class Method:
    """One way of obtaining a model.

    ``start``: ``scratch`` trains with the ``train`` section from random weights, ``baseline`` fine-tunes the
    dense baseline with the ``finetune`` section, ``pruned`` fine-tunes the Slimming-pruned model.
    ``zebra``: trained with Zebra's masks and penalty. ``settings``: what the method changes on top of the
    run's settings (dotted keys). ``final``: a finished model (else an intermediate stage, tabled but not
    plotted). ``sweep``: ``zebra sweep`` can run it as a method.
    """

    name: str
    title: str
    colour: str
    start: str
    zebra: bool
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    final: bool = True
    sweep: bool = True


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dense", "dense baseline", "#444444", "scratch", False, "the dense baseline", sweep=False),
    Method("l1", "L1 activation reg.", "#1f77b4", "baseline", True,
           "element-wise L1 activation regularisation + ZVC (Georgiadis, CVPR 2019), fine-tuned from the baseline",
           {"zebra.block_size": 1, "zebra.penalty": "l1", "zebra.threshold": 0.0, "zebra.density": None}),
    Method("zebra", "Zebra", "#d62728", "baseline", True, "Zebra fine-tuned from the baseline"),
    Method("zebra-scratch", "Zebra from scratch", "#ff7f0e", "scratch", True,
           "Zebra trained from scratch with the baseline's recipe"),
    Method("dense-retrained", "dense, retrained (control)", "#7f7f7f", "baseline", False,
           "the dense baseline trained again with the fine-tune recipe and no masks: what the extra epochs alone give"),
    Method("slim", "Slimming", "#2ca02c", "pruned", False, "Network Slimming: sparsity-train, prune, fine-tune"),
    Method("slim-zebra", "Slimming+Zebra", "#9467bd", "pruned", True, "the Slimming-pruned model fine-tuned with Zebra"),
    Method("zebra-calibrated", "Zebra calibrated, no training", "#e377c2", "baseline", True,
           "per-layer thresholds searched on a few hundred training images of a trained model, no training",
           sweep=False),
    Method("slim-sparse", "sparsity-trained, before pruning", "#98df8a", "scratch", False,
           "the BatchNorm-sparsity-trained model before pruning", final=False, sweep=False),
    Method("slim-pruned", "pruned, before fine-tuning", "#bcbd22", "pruned", False,
           "the pruned model before fine-tuning", final=False, sweep=False),
)}
SWEEP_METHODS = tuple(name for name, method in METHODS.items() if method.sweep)
OTHER_COLOUR = "#8c564b"  # a method this version does not know (read from a newer file)


def method_title(name: str) -> str:
    """The title of a method in reports (an unknown name is shown as it is)."""
    return METHODS[name].title if name in METHODS else name


def method_colour(name: str) -> str:
    """The colour of a method in plots."""
    return METHODS[name].colour if name in METHODS else OTHER_COLOUR

# `zebra slim --flow`: which final methods each Network Slimming flow produces, in order.
SLIM_FLOWS = {"slim": ("slim",), "slim-zebra": ("slim-zebra",), "joint": ("slim-zebra",), "compare": ("slim", "slim-zebra")}
