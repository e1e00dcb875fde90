"""``zebra import``: a model trained elsewhere (its weights file, and the builder that ``model.name`` names) checked
against the model and the data, measured on the test split and written as a checkpoint that every verb reads."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..analysis.measure import TrafficReport
from ..config import RunConfig, load_config
from ..data import DataSpec
from ..training.building import build_data, build_prepared_model, evaluate, resolve_device
from ..training.checkpoint import (
    Checkpoint,
    CheckpointError,
    Reading,
    load_weights,
    read_torch_file,
    save_checkpoint,
    state_differences,
)

WRAPPERS = ("state_dict", "model")  # where a training script's dict keeps the weights
TRUST = "if you trust its source, allow it with --trust-pickle (trust_pickle=True in Python)"
WEIGHTS_READING = Reading("weights file", "weights file", "give the file that torch.save(model.state_dict(), ...) "
                          "wrote", TRUST)
SHOWN = 6  # keys named per kind of mismatch


@dataclass(frozen=True)
class Imported:
    """What ``import_model`` leaves: the prepared model (eval mode, masks off), its config and data, its
    measurement on the test split, and the checkpoint written (None when none was asked for)."""

    model: nn.Module
    config: RunConfig
    spec: DataSpec
    report: TrafficReport
    checkpoint: Path | None

    def summary(self) -> str:
        """One line: top-1 and the bytes per image in dense and ZVC."""
        per_image = self.report.total_bytes("dense") / max(self.report.images, 1) / 1024
        top1 = "no labels" if self.report.accuracy is None else f"top-1 {self.report.accuracy:.2%}"
        return (f"{self.config.model.name} on {self.report.images} test images of {self.spec.name}: {top1}; "
                f"activation traffic {per_image:.1f} KiB per image dense, ZVC {self.report.reduction('zvc'):.1%} less "
                f"at {self.report.bits} bits (no Zebra yet: zebra calibrate or zebra train --init)")


def import_model(weights: str | Path | Mapping[str, Any] | nn.Module, model: str, out: str | Path | None = None,
                 overrides: list[str] | tuple[str, ...] = (), preset: str | None = "quick",
                 config_file: str | Path | None = None, trust_pickle: bool = False,
                 progress: bool = True) -> Imported:
    """Build ``model`` (``torchvision:<name>``, ``timm:<name>``, a project model or ``module:function``) for the data
    of ``preset`` + ``config_file`` + ``overrides``, load ``weights`` (a file, a state dict or a module) into it,
    refusing any mismatch in one line before any work, measure it on the test split and write it to ``out``."""
    config = load_config(preset, config_file, [f"model.name={json.dumps(_absolute(model))}", *overrides])
    origin = f"weights file {weights}" if isinstance(weights, (str, Path)) else "the weights"
    state = read_state(weights, trust_pickle)
    _, test_set, spec = build_data(config)
    prepared = build_prepared_model(config, spec, masked=False)
    check_fit(prepared, state, spec, origin, config.model.name)
    load_weights(prepared, state, origin)
    device = resolve_device(config.device)
    report = evaluate(prepared.eval().to(device), test_set, config, device, progress)
    path = None if out is None else Path(out)
    if path is not None:
        source = str(weights) if isinstance(weights, (str, Path)) else None
        save_checkpoint(path, Checkpoint({k: v.cpu() for k, v in prepared.state_dict().items()}, config.to_dict(),
                                         dataclasses.asdict(spec), derived_from=source))
    return Imported(prepared, config, spec, report, path)


def _absolute(model: str) -> str:
    """``path/to/file.py:function`` with the file's absolute path, so the checkpoint rebuilds from any folder."""
    where, _, function = model.rpartition(":")
    return f"{Path(where).resolve()}:{function}" if where.endswith(".py") else model


def read_state(weights: str | Path | Mapping[str, Any] | nn.Module,
               trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in ``weights``: a bare one, one under ``state_dict`` or ``model`` (a training script's dict, a
    torchzebra checkpoint), or a whole pickled module's (read only with ``trust_pickle``); DataParallel's
    ``module.`` prefix dropped."""
    if isinstance(weights, (str, Path)):
        payload = read_torch_file(Path(weights), "cpu", WEIGHTS_READING, weights_only=not trust_pickle)
        origin = str(weights)
    else:
        payload, origin = weights, "the weights"
    state = _unwrap(payload)
    if state is None:
        raise CheckpointError(f"{origin} holds {_what(payload)}, not a model's weights: give a file of "
                              "torch.save(model.state_dict(), ...), or a dict with them under 'state_dict' or 'model'")
    state = {k: v for k, v in state.items() if not k.startswith("zebra.")}  # a torchzebra checkpoint's thresholds
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _unwrap(payload: Any) -> dict[str, torch.Tensor] | None:
    """The state dict in ``payload``, or None when there is none."""
    if isinstance(payload, nn.Module):
        return payload.state_dict()
    if not isinstance(payload, Mapping) or not payload:
        return None
    if all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in payload.items()):
        return dict(payload)
    inner = next((payload[key] for key in WRAPPERS if key in payload), None)
    return None if inner is None else _unwrap(inner)


def _what(payload: Any) -> str:
    """A foreign payload in a few words."""
    if isinstance(payload, Mapping):
        keys = list(payload)
        return f"a dict with keys {keys[:SHOWN]}{' ...' if len(keys) > SHOWN else ''}" if keys else "an empty dict"
    return f"a {type(payload).__name__}"


def check_fit(model: nn.Module, state: dict[str, torch.Tensor], spec: DataSpec, origin: str, name: str) -> None:
    """Refuse ``state`` in one line when its keys or shapes differ from ``model``'s (prepared, its Zebra thresholds
    aside), naming every kind of mismatch and, where the classifier or the first conv differs, the data's side."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("zebra.")}
    differences = state_differences(own, state)
    if not any(differences.values()):
        return
    shapes = {k: f"{k} {list(state[k].shape)} here {list(own[k].shape)}" for k in differences["shape differs"]}
    parts = [f"{len(keys)} {label}: {', '.join(shapes.get(k, k) for k in keys[:SHOWN])}"
             f"{' ...' if len(keys) > SHOWN else ''}" for label, keys in differences.items() if keys]
    hints = _data_hints(own, state, differences["shape differs"], spec)
    raise CheckpointError(f"{origin} does not fit {name} built for {spec.name} ({spec.classes} classes, "
                          f"{spec.channels} channels): {'; '.join(parts + hints)}; check --model, model.options and "
                          "data.* settings")


def _data_hints(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], differ: list[str],
                spec: DataSpec) -> list[str]:
    """Why shapes differ, where the data decides: a classifier for another number of classes, a first conv for other
    input channels."""
    hints, same_rank = [], [k for k in differ if state[k].dim() == own[k].dim() > 0]
    outputs = {state[k].shape[0] for k in same_rank if own[k].dim() <= 2 and own[k].shape[0] == spec.classes}
    if outputs:
        hints.append(f"the weights have {', '.join(map(str, sorted(outputs)))} outputs and the data "
                     f"{spec.classes} classes")
    inputs = {state[k].shape[1] for k in same_rank if own[k].dim() == 4 and own[k].shape[1] == spec.channels
              and state[k].shape[0] == own[k].shape[0]}
    if inputs:
        hints.append(f"the weights take {', '.join(map(str, sorted(inputs)))} input channels and the data has "
                     f"{spec.channels}")
    return hints
