"""ONNX export of a prepared model: the block masks stay in the graph and are computed for every input."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import FILE_MODE
from ..errors import ZebraError
from ..nn import eval_mode, plain_model


def to_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write ``model`` (prepared or plain) to ``path`` as ONNX with a dynamic batch dimension.

    Uses PyTorch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs the ``onnx`` and
    ``onnxscript`` packages: ``pip install torchzebra[onnx]``). The file is written atomically: a failed
    export leaves no partial file. The model is exported in eval mode; its modes are restored afterwards.
    """
    path = Path(path)
    _require("onnx", "onnxscript")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        with eval_mode(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        dynamic_shapes=({0: "batch"},), verbose=False)
        if program is None:  # the dynamo exporter always returns one; the legacy path would not
            raise RuntimeError("torch.onnx.export returned no program to save")
        program.save(temporary)  # one self-contained file: the weights are small for the CNNs we export
        os.chmod(temporary, FILE_MODE)  # as every other file written, not mkstemp's 0600
        os.replace(temporary, path)
    except Exception as error:
        raise ZebraError(f"ONNX export of {type(plain_model(model)).__name__} failed: {error}") from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _require(*modules: str) -> None:
    """Raise a clear error when an optional package of the ``onnx`` extra is missing."""
    import importlib.util
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ZebraError(f"ONNX export needs {', '.join(missing)}: pip install 'torchzebra[onnx]'")
