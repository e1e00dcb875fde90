"""The Zebra model in Zebra+ZVC against the baseline model in ZVC across DRAM bandwidths and batch sizes, and the
break-even bandwidth: the highest at which the Zebra model is at least ``MARGIN`` times faster.

Energy does not depend on the bandwidth in this model (no leakage, no static power): its bandwidth curve is flat,
its batch curve is not (the weights' share of the bytes falls with the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .cost import Cost, compare, cost_network
from .spec import Accelerator
from .work import LayerWork

MARGIN = 1.10  # the speed-up over the baseline in ZVC that the break-even bandwidth asks for
BANDWIDTH_FACTORS = tuple(2.0 ** (k / 2) for k in range(-16, 9))  # 1/256x to 16x the accelerator's, half octaves
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BISECTIONS = 40  # halvings of the log-bandwidth interval around the break-even point: far below 0.1 %


@dataclass(frozen=True)
class Pair:
    """The two models' layer work on one accelerator (Zebra model first), with their reports' bit widths."""

    accelerator: Accelerator
    zebra: list[LayerWork]
    baseline: list[LayerWork]
    bits: tuple[int, int]

    def totals(self, gbps: float, batch: int) -> tuple[Cost, Cost]:
        """(the Zebra model in Zebra+ZVC, the baseline in ZVC) per image at ``gbps`` GB/s in batches of ``batch``."""
        spec = replace(self.accelerator, dram_gbps=gbps)
        return (cost_network(self.zebra, spec, self.bits[0], batch).total("zebra_zvc"),
                cost_network(self.baseline, spec, self.bits[1], batch).total("zvc"))

    def speedup(self, gbps: float, batch: int) -> float:
        """The Zebra model's speed-up over the baseline at ``gbps`` and ``batch``."""
        return compare(*self.totals(gbps, batch))["speedup"]

    def bytes_per_mac(self, gbps: float) -> float:
        """DRAM bytes per cycle per MAC of the array at ``gbps``."""
        return gbps / self.accelerator.clock_ghz / self.accelerator.macs_per_cycle

    def point(self, gbps: float, batch: int) -> dict[str, float]:
        """One point of a curve: the bandwidth, its bytes per MAC, the batch, speed-up and savings."""
        return {"dram_gbps": gbps, "bytes_per_mac": self.bytes_per_mac(gbps), "batch": batch,
                **compare(*self.totals(gbps, batch))}


def _bisect(pair: Pair, low: float, high: float, batch: int) -> float:
    """The bandwidth between ``low`` (speed-up >= MARGIN) and ``high`` (below it) where the speed-up crosses it."""
    for _ in range(BISECTIONS):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if pair.speedup(middle, batch) >= MARGIN else (low, middle)
    return low


def break_even(pair: Pair, batch: int) -> dict[str, Any]:
    """The highest bandwidth (GB/s, and bytes per MAC) at which the Zebra model in Zebra+ZVC is at least MARGIN
    times faster than the baseline in ZVC at ``batch``; null, with the reason, when even 1/256 of the
    accelerator's bandwidth is not enough."""
    grid = [pair.accelerator.dram_gbps * factor for factor in BANDWIDTH_FACTORS]
    paying = [gbps for gbps in grid if pair.speedup(gbps, batch) >= MARGIN]
    if not paying:
        zebra, baseline = pair.totals(grid[0], batch)
        reason = (f"below {MARGIN:.2f}x down to {grid[0]:.3g} GB/s (1/256 of {pair.accelerator.dram_gbps:g}); without "
                  f"bandwidth the speed-up tends to the DRAM byte ratio, {baseline.dram_bytes / zebra.dram_bytes:.3f}x")
        return {"dram_gbps": None, "bytes_per_mac": None, "batch": batch, "reason": reason}
    low = max(paying)
    high = low * 2
    while pair.speedup(high, batch) >= MARGIN:  # at unlimited bandwidth the speed-up is 1: this ends
        low, high = high, high * 2
    gbps = _bisect(pair, low, high, batch)
    return {"dram_gbps": gbps, "bytes_per_mac": pair.bytes_per_mac(gbps), "batch": batch, "reason": None}


def model_curves(pair: Pair, batch: int) -> dict[str, Any]:
    """The JSON of the curves: speed-up and savings across bandwidths (at ``batch``) and across batches (at the
    accelerator's bandwidth, each with its break-even bandwidth), and the break-even point at ``batch``."""
    gbps = pair.accelerator.dram_gbps
    batches = [{**pair.point(gbps, b), "break_even": break_even(pair, b)} for b in BATCHES]
    return {"compared": "the Zebra model in zebra_zvc against the baseline model in zvc", "margin": MARGIN,
            "bandwidth": [pair.point(gbps * factor, batch) for factor in BANDWIDTH_FACTORS],
            "batch": batches, "break_even": break_even(pair, batch)}
