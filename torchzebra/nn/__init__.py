"""Modules: the ZebraLayer and prepare/remove, which insert it into any traceable CNN."""

from .layer import ZebraLayer
from .prepare import is_prepared, prepare, remove, set_masking, zebra_layers

__all__ = ["ZebraLayer", "is_prepared", "prepare", "remove", "set_masking", "zebra_layers"]
