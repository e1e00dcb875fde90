"""Opening a trained model: ``open_checkpoint`` reads a checkpoint, applies ``section.key=value`` overrides to its
run config, rebuilds the prepared model with its weights and puts it on the config's device. Every workflow and
verb that reads a model does it through here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..analysis.measure import TrafficReport
from ..config.run import RunConfig, apply_override, from_dict
from ..data import DataSpec
from .building import build_data, build_prepared_model, evaluate, example_inputs, resolve_device
from .checkpoint import Checkpoint, load_checkpoint, load_model_state, load_weights


@dataclass
class OpenedCheckpoint:
    """A checkpoint opened for use: what it holds, its config (overrides applied), its data's shape, and the
    rebuilt model in eval mode on ``device``. Its datasets are built on first use."""

    path: Path
    payload: Checkpoint
    config: RunConfig
    spec: DataSpec
    model: nn.Module
    device: torch.device

    def example_inputs(self) -> torch.Tensor:
        """One zero image of the data's shape, on the model's device (for tracing and counting)."""
        return example_inputs(self.spec).to(self.device)

    @cached_property
    def datasets(self) -> tuple[Any, Any]:
        """(train set, test set) of the config's data section."""
        train_set, test_set, _ = build_data(self.config)
        return train_set, test_set

    @property
    def test_set(self) -> Any:
        return self.datasets[1]

    def evaluate(self, progress: bool = True, config: RunConfig | None = None) -> TrafficReport:
        """Accuracy and traffic of the model on its test split (with ``config``'s settings, e.g. other bits)."""
        return evaluate(self.model, self.test_set, config or self.config, self.device, progress)


def checkpoint_config(payload: Checkpoint, overrides: Iterable[str] = ()) -> RunConfig:
    """The run config saved in a checkpoint, with ``section.key=value`` overrides applied and validated."""
    values = payload.config
    for assignment in overrides:
        values = apply_override(values, assignment)
    return from_dict(values)


def open_checkpoint(path: str | Path, overrides: Iterable[str] = (), masked: bool | None = None,
                    device: torch.device | None = None) -> OpenedCheckpoint:
    """``path`` opened: its model rebuilt as saved (``masked=None``), or with Zebra's masks on or off and only the
    weights taken from the checkpoint (its own thresholds kept, as a calibration or fine-tune starts), on
    ``device`` (default: the config's ``device`` setting)."""
    path = Path(path)
    payload = load_checkpoint(path)
    config = checkpoint_config(payload, overrides)
    spec = DataSpec(**payload.spec)
    model = build_prepared_model(config, spec, payload.masked if masked is None else masked, payload.structure)
    load = load_model_state if masked is None else load_weights
    load(model, payload.model, f"checkpoint {path}")
    device = resolve_device(config.device) if device is None else device
    return OpenedCheckpoint(path, payload, config, spec, model.eval().to(device), device)


def load_trained(checkpoint: str | Path, overrides: Iterable[str] = ()) -> tuple[nn.Module, RunConfig]:
    """Rebuild a trained model (in eval mode, on the CPU) from its checkpoint; overrides may change e.g. data
    settings."""
    opened = open_checkpoint(checkpoint, overrides, device=torch.device("cpu"))
    return opened.model, opened.config
