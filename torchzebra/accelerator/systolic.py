"""SCALE-Sim 3.0.0's compute runtime of a systolic array, in closed form (no simulator needed).

A layer is three numbers: ofmap pixels ``P``, window size ``W`` (filter height x width x channels) and
filters ``F``. Each dataflow maps two of them onto the array's rows and columns (``Sr`` x ``Sc``, cut into
folds of ``rows`` x ``cols``) and streams the third (``T``) through it:

- ``os`` (output stationary): ``Sr = P``, ``Sc = F``, ``T = W``; a fold takes ``T + rows + cols - 2`` cycles;
- ``ws`` (weight stationary):  ``Sr = W``, ``Sc = F``, ``T = P``; a fold takes ``2 rows + cols + T - 2`` cycles;
- ``is`` (input stationary):   ``Sr = W``, ``Sc = P``, ``T = F``; a fold takes ``2 rows + cols + T - 2`` cycles.

These are the lengths of SCALE-Sim's per-fold demand matrices (fill, stream, drain; the weight and input
stationary folds first load the stationary operand over ``rows`` cycles). Its ``Total Cycles`` is the index
of the last cycle, one less than their sum. A depthwise layer runs as one single-channel layer per channel,
as SCALE-Sim runs a ``DP`` row. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ZebraError
from .spec import DATAFLOWS


@dataclass(frozen=True)
class Gemm:
    """One (single-channel, for a depthwise layer) convolution as SCALE-Sim's operand matrices, run ``repeat``
    times: ``pixels`` of the ofmap, ``window`` elements per output, ``filters`` outputs per pixel."""

    pixels: int
    window: int
    filters: int
    repeat: int = 1  # the channels of a depthwise layer

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the whole layer."""
        return self.pixels * self.weights

    @property
    def weights(self) -> int:
        """Weight elements of the whole layer (biases not counted)."""
        return self.window * self.filters * self.repeat


def fold_plan(gemm: Gemm, dataflow: str) -> tuple[int, int, int]:
    """(``Sr``, ``Sc``, ``T``) of ``gemm`` under ``dataflow``: the operand dimensions on the array's rows and
    columns and the one streamed through it."""
    if dataflow == "os":
        return gemm.pixels, gemm.filters, gemm.window
    if dataflow == "ws":
        return gemm.window, gemm.filters, gemm.pixels
    if dataflow == "is":
        return gemm.window, gemm.pixels, gemm.filters
    raise ZebraError(f"dataflow={dataflow!r} is invalid: use one of {', '.join(DATAFLOWS)}")


def folds(gemm: Gemm, rows: int, cols: int, dataflow: str) -> int:
    """How many times the array is loaded for one run of ``gemm``."""
    sr, sc, _ = fold_plan(gemm, dataflow)
    return math.ceil(sr / rows) * math.ceil(sc / cols)


def fold_cycles(gemm: Gemm, rows: int, cols: int, dataflow: str) -> int:
    """Cycles of one fold: fill, stream ``T`` and drain (plus the stationary operand's load for ws and is)."""
    streamed = fold_plan(gemm, dataflow)[2]
    return streamed + rows + cols - 2 + (rows if dataflow in ("ws", "is") else 0)


def compute_cycles(gemm: Gemm, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim's ``Total Cycles`` of the layer in CALC mode (summed over a depthwise layer's channels); 0
    for a layer without MACs."""
    if not gemm.macs:
        return 0
    return gemm.repeat * (folds(gemm, rows, cols, dataflow) * fold_cycles(gemm, rows, cols, dataflow) - 1)
