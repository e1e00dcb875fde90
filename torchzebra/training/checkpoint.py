"""Checkpoints: one typed payload (``Checkpoint``) with one writer, ``save_checkpoint`` (atomic: temp file + rename),
and one reader, ``load_checkpoint`` (``torch.load(weights_only=True)``), which also reads earlier versions' files.

Reading anything else (a directory, an empty, truncated or random file, another program's ``torch.save``)
is a one-line ``CheckpointError`` that says why; "could run code" only when ``weights_only`` refused a
pickled Python global. ``read_torch_file`` is that reader for any ``torch.save`` file (``zebra import``'s weights).
"""

from __future__ import annotations

import io
import pickle
import re
import reprlib
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_bytes
from ..errors import ZebraError

FORMAT = "torchzebra-checkpoint"
VERSION = 2  # 1: the Zebra flag was saved as "zebra", the optimiser settings as "stage"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
FIX = "give a last.pt written by zebra train, run, slim, prune or calibrate"
UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module \S+ is blocked)")


class CheckpointError(ZebraError):
    """A checkpoint cannot be used; the message says what is wrong with it and what to do."""


@dataclass(frozen=True)
class Reading:
    """What a file read by ``read_torch_file`` is called in its errors, and what each error tells the user to do."""

    noun: str = "torchzebra checkpoint"
    short: str = "checkpoint"  # as in "checkpoint X does not exist", "give the checkpoint file in it"
    fix: str = FIX
    unsafe_fix: str = "load only checkpoints written by torchzebra from a source you trust"

    def unreadable(self, path: Path, reason: str, fix: str | None = None) -> CheckpointError:
        """The one-line error for a file that is not a readable one of these."""
        return CheckpointError(f"{path} is not a readable {self.noun}: {reason}; {fix or self.fix}")


CHECKPOINT_READING = Reading()


@dataclass
class Checkpoint:
    """What a checkpoint holds: the model and how to rebuild it, and, from a training, what resuming it exactly
    needs (those fields keep their defaults in the checkpoints of ``zebra prune`` and ``zebra calibrate``)."""

    model: dict[str, torch.Tensor]  # the prepared model's state_dict
    config: dict[str, Any]  # the run config (RunConfig.to_dict())
    spec: dict[str, Any]  # the data's DataSpec fields: classes, channels, size
    masked: bool = False  # Zebra's masks are active (False: a dense model, its maps measured only)
    structure: dict[str, int] | None = None  # BatchNorm channel counts of a pruned model (slim.structure)
    optim: dict[str, Any] | None = None  # the optimiser settings it was trained with (an OptimSection's fields)
    epoch: int = 0  # epochs finished
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)  # each extension's settings
    extension_state: dict[str, dict[str, Any]] = field(default_factory=dict)  # each extension's state_dict()
    derived_from: str | None = None  # the checkpoint that a pruned or calibrated model was made from
    plan: dict[str, Any] | None = None  # a pruned model's SlimPlan

    def to_dict(self) -> dict[str, Any]:
        """The payload ``torch.save`` writes: these fields (tensors not copied) under a format marker."""
        return {"format": FORMAT, "version": VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, payload: dict[str, Any], origin: str = "the checkpoint") -> "Checkpoint":
        """A payload of this version or an earlier one; one without the model, config or data spec is refused."""
        values = _current(payload) if payload.get("version") == 1 else dict(payload)
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("model", "config", "spec") if name not in values]
        if missing:
            raise CheckpointError(f"{origin} lacks {', '.join(missing)}; {FIX}")
        return cls(**{key: value for key, value in values.items() if key in known})


def _current(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-1 payload under this version's names (the Slimming weight alone, before extensions were saved)."""
    values = {key: value for key, value in payload.items() if key not in ("zebra", "stage", "sparsity")}
    values.update(masked=payload.get("zebra", False), optim=payload.get("stage"),
                  derived_from=payload.get("pruned_from", payload.get("calibrated_from")))
    if "extensions" not in payload:
        values["extensions"] = {"bn_sparsity": {"s": payload["sparsity"]}} if payload.get("sparsity") else {}
    return values


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Serialise ``checkpoint`` with a format marker, then replace ``path`` atomically (never half-written)."""
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint`` (of this version or an earlier one); anything else is a
    CheckpointError saying why."""
    path = Path(path)
    payload = read_torch_file(path, map_location)
    marker = payload.get("format") if isinstance(payload, dict) else None
    if not (isinstance(marker, str) and marker == FORMAT):
        raise CHECKPOINT_READING.unreadable(path, f"{_contents(payload)}, not a torchzebra checkpoint (no '{FORMAT}' "
                                                  "marker)")
    version = payload.get("version")
    if not (isinstance(version, int) and 1 <= version <= VERSION):
        raise CheckpointError(f"{path} has checkpoint version {reprlib.repr(version)}, this torchzebra reads 1 to "
                              f"{VERSION}; read it with the torchzebra that wrote it, or train again")
    return Checkpoint.from_dict(payload, str(path))


def read_torch_file(path: Path, map_location: str | torch.device = "cpu", reading: Reading = CHECKPOINT_READING,
                    weights_only: bool = True) -> Any:
    """``torch.load(path)`` (only tensors and plain data unless ``weights_only`` is False); every way a file can fail
    to load is a CheckpointError worded by ``reading``."""
    if not path.exists():
        raise CheckpointError(f"{reading.short} {path} does not exist")
    if path.is_dir():
        raise reading.unreadable(path, "it is a directory", f"give the {reading.short} file in it, e.g. "
                                                              f"{path / 'last.pt'}")
    if not path.is_file():
        raise reading.unreadable(path, "it is not a regular file")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
    except OSError as error:
        raise reading.unreadable(path, f"cannot read it ({error.strerror})",
                                 "check that the file is readable") from error
    if head != ZIP_MAGIC:
        raise reading.unreadable(path, f"it is not a zip archive as torch.save writes (it starts with {head!r})" if head
                                 else "the file is empty")
    try:
        with warnings.catch_warnings():  # a damaged archive may warn (e.g. of an odd pickle protocol) before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as error:
        unsafe = UNSAFE_GLOBAL.search(str(error))
        if unsafe is None:
            raise _corrupt(path, error, reading) from error
        raise reading.unreadable(
            path, f"it was refused by torch.load(weights_only=True): it holds the Python object {unsafe.group(1)}, "
                  "not only tensors and plain data, and loading it could run code", reading.unsafe_fix) from error
    except Exception as error:  # a damaged archive fails anywhere in the reader: KeyError, IndexError, struct.error ...
        raise _corrupt(path, error, reading) from error


def _corrupt(path: Path, error: Exception, reading: Reading) -> CheckpointError:
    """The error for an archive that torch.load cannot read, with the first line of its reason."""
    if isinstance(error, pickle.UnpicklingError) and isinstance(error.__context__, pickle.UnpicklingError):
        error = error.__context__  # torch.load wraps the unpickler's reason in advice about weights_only=False
    lines = str(error).splitlines() or [""]
    detail = lines[0] if len(lines[0]) <= 120 else f"{lines[0][:117]}..."
    return reading.unreadable(path, f"torch.load cannot read it, truncated or corrupt? ({type(error).__name__}: "
                                    f"{detail})")


def _contents(payload: Any) -> str:
    """What a foreign ``torch.save`` file holds, in a few words."""
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}"
    tensors = bool(payload) and all(isinstance(value, torch.Tensor) for value in payload.values())
    return f"it holds {'a state_dict' if tensors else 'a dict'} with keys {reprlib.repr(list(payload))}"


def state_differences(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """The keys of ``state`` that ``own`` (a model's state dict) lacks, those it has and ``state`` lacks, and those
    whose shapes differ, each sorted; empty lists when ``state`` fits."""
    return {"missing": sorted(set(own) - set(state)), "unexpected": sorted(set(state) - set(own)),
            "shape differs": sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a state dict strictly; a shape or key mismatch is a CheckpointError listing the keys."""
    differences = state_differences(model.state_dict(), state)
    if any(differences.values()):
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in differences.items() if keys]
        raise CheckpointError(f"{origin} does not fit this model ({'; '.join(parts)}); check model.* settings")
    model.load_state_dict(state)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a checkpoint's weights into a prepared model but keep the model's own Zebra thresholds (a fine-tune
    or a calibration starts from the weights, not from the source's masks)."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith("zebra.")}
    load_model_state(model, {**own, **{k: v for k, v in state.items() if not k.startswith("zebra.")}}, origin)
