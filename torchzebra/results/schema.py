"""The typed result of every kind of run: one row per model, the command/machine/wall-time line, the config.

``zebra train``, ``zebra run``, ``zebra slim`` and ``zebra sweep`` all produce a ``RunResult``; ``store``
writes and reads it as one JSON schema.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..analysis.measure import TrafficReport
from ..core import FORMATS

_Device = torch.device  # the class below has a field named torch

KINDS = ("train", "run", "slim", "sweep", "calibrate")


@dataclass(frozen=True)
class Machine:
    """Where a result was measured."""

    platform: str
    cpus: int
    torch: str
    device: str
    training: str = ""  # the training step's precision and memory format (empty in files written before it)

    @classmethod
    def here(cls, device: _Device | str, training: str = "") -> "Machine":
        """This machine, with ``device`` the one the models ran on and ``training`` how they were trained."""
        return cls(platform.platform(), torch.get_num_threads(), torch.__version__, str(device), training)


@dataclass(frozen=True)
class RunInfo:
    """The command, machine and wall time of a run."""

    command: str
    machine: Machine
    wall_seconds: float

    def markdown(self) -> str:
        """One Markdown line saying how the result was made."""
        m = self.machine
        return (f"Command: `{self.command}`; machine: {m.platform}, {m.cpus} threads, torch {m.torch} on {m.device}; "
                f"{f'trained in {m.training}; ' if m.training else ''}wall time {self.wall_seconds / 60:.1f} min.")


@dataclass(frozen=True)
class ModelRow:
    """One model of a run: accuracy, traffic per format against the run's reference model, and where it is.

    ``reduction`` is ``1 - bytes(fmt) / reference dense bytes`` (a pruned model's smaller maps count as they
    are); ``delta_top1`` is against the reference's top-1 (fractions, not points). ``traffic`` holds the
    per-layer counts (None in files written before it was kept).
    """

    label: str
    method: str
    top1: float | None
    delta_top1: float | None
    reduction: dict[str, float]
    bytes_per_image: dict[str, float]
    traffic: TrafficReport | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    seconds: float | None = None
    folder: Path | None = None


def model_row(label: str, method: str, traffic: TrafficReport, reference: TrafficReport, **extra: Any) -> ModelRow:
    """The row of a model measured as ``traffic``, with reductions against ``reference``'s dense bytes."""
    dense = reference.total_bytes("dense")
    top1, ref_top1 = traffic.accuracy, reference.accuracy
    return ModelRow(
        label=label, method=method, top1=top1,
        delta_top1=None if top1 is None or ref_top1 is None else top1 - ref_top1,
        reduction={fmt: 1 - traffic.total_bytes(fmt) / dense if dense else 0.0 for fmt in FORMATS},
        bytes_per_image={fmt: traffic.total_bytes(fmt) / max(traffic.images, 1) for fmt in FORMATS},
        traffic=traffic, **extra,
    )


@dataclass(frozen=True)
class RunResult:
    """What a run leaves: its rows (the first ``reference`` is what reductions are measured against)."""

    kind: str
    info: RunInfo
    config: dict[str, Any]
    reference: str
    rows: tuple[ModelRow, ...]

    def row(self, label: str) -> ModelRow:
        """The row labelled ``label``; a missing one is a KeyError listing the labels."""
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"no row {label!r} in this result: it has {[r.label for r in self.rows]}")

    def by_method(self, method: str) -> ModelRow | None:
        """The first row of ``method``, or None."""
        return next((row for row in self.rows if row.method == method), None)
