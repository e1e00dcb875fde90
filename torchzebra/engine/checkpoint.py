"""Checkpoints: written atomically (temp file + rename), read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_bytes

FORMAT = "torchzebra-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says what is wrong with it and what to do."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Serialise ``payload`` with a format marker, then replace ``path`` atomically (never half-written)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``; anything else is a CheckpointError saying why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} was refused by torch.load(weights_only=True): it holds Python objects other than tensors "
            "and plain data, which could run code when loaded. Only load checkpoints written by torchzebra "
            f"({str(error).splitlines()[0]})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchzebra checkpoint (no '{FORMAT}' marker); train with zebra train")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, this torchzebra reads {VERSION}")
    return payload


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a state dict strictly; a shape or key mismatch is a CheckpointError listing the keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", mismatched))
                 if keys]
        raise CheckpointError(f"{origin} does not fit this model ({'; '.join(parts)}); check model.* settings")
    model.load_state_dict(state)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a checkpoint's weights into a prepared model but keep the model's own Zebra thresholds (a fine-tune
    or a calibration starts from the weights, not from the source's masks)."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith("zebra.")}
    load_model_state(model, {**own, **{k: v for k, v in state.items() if not k.startswith("zebra.")}}, origin)
