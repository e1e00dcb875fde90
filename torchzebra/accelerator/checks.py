"""Settings that are valid but implausible for the layers they run: one warning line each."""

from __future__ import annotations

from .spec import Accelerator
from .systolic import fold_plan
from .work import LayerWork

OVERSIZE = 4  # an array side this many times the largest layer dimension mapped onto it is implausible


def implausible(accelerator: Accelerator, works: list[LayerWork]) -> list[str]:
    """A line per array side over OVERSIZE times the largest operand dimension any layer maps onto it: most of the
    array never holds an operand, and filling and draining it dominates the cycles."""
    plans = [fold_plan(work.gemm, accelerator.dataflow) for work in works if work.gemm.macs]
    if not plans:
        return []
    lines = []
    for side, size, largest in (("rows", accelerator.rows, max(p[0] for p in plans)),
                                ("cols", accelerator.cols, max(p[1] for p in plans))):
        if size > OVERSIZE * largest:
            lines.append(f"accelerator {accelerator.name}: array {accelerator.rows}x{accelerator.cols} has {size:,} "
                         f"{side}, over {OVERSIZE}x the largest dimension any layer maps onto them in the "
                         f"{accelerator.dataflow} dataflow ({largest:,}): most of the array stays idle, and "
                         "filling and draining it dominates the cycles")
    return lines
