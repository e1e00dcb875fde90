"""The report's accelerator figures, from a run's ``estimate.json`` (``zebra run`` writes it): per preset, a
per-layer roofline and each layer's compute against stall cycles, then the curves against the baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core import FORMATS, format_title
from .curves import curves_caption, curves_png
from .plots import _png, plt

ESTIMATE = "estimate.json"
SHOWN = ("dense", "zebra_zvc")  # the stall bars compare these two


def stall_bars(bars, layers: list[dict[str, Any]]) -> None:
    """Each layer's compute and stall cycles, dense beside Zebra+ZVC, on ``bars``; the axis holds the tallest bar
    whole (bars of no stall would otherwise pin the top to the tallest compute bar)."""
    width, top = 0.4, 0.0
    for index, fmt in enumerate(SHOWN):
        xs = [i + (index - 0.5) * width for i in range(len(layers))]
        compute = [layer["formats"][fmt]["compute_cycles"] for layer in layers]
        stall = [layer["formats"][fmt]["stall_cycles"] for layer in layers]
        bars.bar(xs, compute, width, color=("#4c72b0", "#55a868")[index], label=f"{format_title(fmt)}: compute")
        bars.bar(xs, stall, width, bottom=compute, color=("#c44e52", "#dd8452")[index],
                 label=f"{format_title(fmt)}: stall")
        top = max([top, *(c + s for c, s in zip(compute, stall))])
    bars.set_ylim(0, top * 1.08 or 1)
    bars.set_xticks(range(len(layers)), [layer["name"] for layer in layers], rotation=60, ha="right", fontsize=7)
    bars.set_ylabel("cycles per image")
    bars.legend(fontsize=7)
    bars.grid(axis="y", alpha=0.3)


def roofline_png(name: str, result: dict[str, Any]) -> bytes:
    """Left: every layer in every format at (MACs per DRAM byte, attained MAC/s) under the compute roof and the
    bandwidth slope. Right: each layer's compute and stall cycles, dense beside Zebra+ZVC."""
    spec = result["accelerator"]
    clock = spec["clock_ghz"] * 1e9
    peak, bandwidth = spec["array"][0] * spec["array"][1] * clock, spec["dram_gbps"] * 1e9
    layers = [layer for layer in result["layers"] if layer["macs"]]
    figure, (roof, bars) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 1.4]})
    for fmt in FORMATS:
        costs = [layer["formats"][fmt] for layer in layers]
        roof.scatter([layer["macs"] / c["dram_bytes"] for layer, c in zip(layers, costs)],
                     [layer["macs"] / (c["cycles"] / clock) for layer, c in zip(layers, costs)], s=18,
                     label=format_title(fmt), alpha=0.8)
    low, high = roof.get_xlim()
    knee = peak / bandwidth
    xs = [min(low, knee / 10), knee, max(high, knee * 10)]
    roof.plot(xs, [min(peak, x * bandwidth) for x in xs], color="#333333", linewidth=1.2,
              label=f"roof {peak / 1e12:.3g} TMAC/s, slope {spec['dram_gbps']:g} GB/s")
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("MACs per DRAM byte")
    roof.set_ylabel("attained MAC/s")
    roof.grid(alpha=0.3, which="both")
    roof.legend(fontsize=7)
    stall_bars(bars, layers)
    figure.suptitle(f"{name}: {spec['array'][0]}x{spec['array'][1]} {spec['dataflow']}, {spec['clock_ghz']:g} GHz, "
                    f"{spec['dram_gbps']:g} GB/s DRAM", fontsize=9)
    return _png(figure)


def estimate_figures(run_dir: str | Path, prefix: str = "") -> list[tuple[str, str, bytes]]:
    """(file name, caption, PNG) per preset of ``run_dir/estimate.json``: its roofline, and its curves against the
    baseline where the estimate has them; none when the run has no estimate."""
    path = Path(run_dir) / ESTIMATE
    if not path.is_file():
        return []
    figures = []
    for name, result in json.loads(path.read_text())["accelerators"].items():
        caption = (f"{name} ({run_dir}): per-layer roofline of every format, and compute against stall cycles per "
                   "layer (dense beside Zebra+ZVC), per image (docs/ACCELERATORS.md)")
        figures.append((f"{prefix}roofline-{name}.png", caption, roofline_png(name, result)))
        if result.get("curves"):
            figures.append((f"{prefix}curves-{name}.png", curves_caption(name, result), curves_png(name, result)))
    return figures
