"""The report's curves of one accelerator, from an estimate against a baseline: the Zebra model in Zebra+ZVC over
the baseline in ZVC across DRAM bandwidths and batch sizes, with the break-even bandwidth."""

from __future__ import annotations

from typing import Any

from .plots import _png, plt


def _bandwidth_panel(axes, result: dict[str, Any]) -> None:
    """Speed-up against DRAM bandwidth (log), the accelerator's bandwidth, the margin and the break-even point."""
    curves, spec = result["curves"], result["accelerator"]
    points = curves["bandwidth"]
    axes.plot([p["dram_gbps"] for p in points], [p["speedup"] for p in points], marker=".", color="#55a868",
              label=f"speed-up at batch {result['batch']}")
    axes.axhline(curves["margin"], color="#999999", linestyle=":", label=f"{curves['margin']:.2f}x")
    axes.axvline(spec["dram_gbps"], color="#333333", linestyle="--",
                 label=f"{spec['name']}: {spec['dram_gbps']:g} GB/s")
    even = curves["break_even"]["dram_gbps"]
    if even is not None:
        axes.axvline(even, color="#c44e52", linestyle="-.", label=f"break-even {even:.3g} GB/s")
    axes.set_xscale("log")
    axes.set_xlabel("DRAM GB/s")
    axes.set_ylabel("speed-up over the baseline's ZVC")
    per_mac = 1e9 / (spec["clock_ghz"] * 1e9 * spec["array"][0] * spec["array"][1])  # B/MAC per GB/s
    axes.secondary_xaxis("top", functions=(lambda g: g * per_mac, lambda b: b / per_mac)).set_xlabel("bytes per MAC")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)


def _batch_panel(axes, result: dict[str, Any]) -> None:
    """Speed-up and energy saving against the batch at the accelerator's bandwidth."""
    points = result["curves"]["batch"]
    batches = [p["batch"] for p in points]
    axes.plot(batches, [p["speedup"] for p in points], marker=".", color="#55a868", label="speed-up")
    axes.set_xscale("log", base=2)
    axes.set_xlabel(f"batch (images per weight read), at {result['accelerator']['dram_gbps']:g} GB/s")
    axes.set_ylabel("speed-up over the baseline's ZVC")
    saving = axes.twinx()
    saving.plot(batches, [p["energy_saving"] * 100 for p in points], marker=".", color="#dd8452",
                label="energy saving")
    saving.set_ylabel("energy saving against the baseline's ZVC, %")
    lines = axes.get_legend_handles_labels()[0] + saving.get_legend_handles_labels()[0]
    axes.legend(lines, [line.get_label() for line in lines], fontsize=7)
    axes.grid(alpha=0.3, which="both")


def curves_png(name: str, result: dict[str, Any]) -> bytes:
    """Left: speed-up against DRAM bandwidth. Right: speed-up and energy saving against the batch."""
    figure, (bandwidth, batch) = plt.subplots(1, 2, figsize=(13, 4.2))
    _bandwidth_panel(bandwidth, result)
    _batch_panel(batch, result)
    figure.suptitle(f"{name}: the Zebra model in Zebra+ZVC over the baseline model in ZVC, per image", fontsize=9,
                    y=1.07)
    return _png(figure)


def curves_caption(name: str, result: dict[str, Any]) -> str:
    """The break-even point (or why there is none) and the energy story."""
    point, margin = result["curves"]["break_even"], result["curves"]["margin"]
    even = (f"at least {margin:.2f}x faster below {point['dram_gbps']:.3g} GB/s ({point['bytes_per_mac']:.3g} bytes "
            f"per MAC)" if point["dram_gbps"] is not None else f"never {margin:.2f}x faster: {point['reason']}")
    return (f"{name}: the Zebra model in Zebra+ZVC against the baseline in ZVC across DRAM bandwidths (energy does not "
            f"depend on it here) and batch sizes; at batch {point['batch']} it is {even}. "
            f"{result['curves']['energy_story']}")
