"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402

from .._numbers import counted  # noqa: E402
from ..analysis.measure import TrafficReport
from ..core import FORMATS, expand_blocks, format_title, nonzero_blocks  # noqa: E402
from ..results import method_colour, method_title  # noqa: E402
from .summary import Point, pareto_front  # noqa: E402


def _png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def pareto_png(points: list[Point], budget_points: float = 1.0) -> bytes:
    """Top-1 against bandwidth reduction (each point in its best format), every method's Pareto front drawn."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    baseline = max(p.baseline_top1 for p in points) * 100
    axes.axhline(baseline - budget_points, color="#999999", linestyle="--", linewidth=1)
    axes.text(0.99, baseline - budget_points, f"baseline - {counted(budget_points, 'point')}", va="bottom", ha="right",
              fontsize=8, color="#666666", transform=axes.get_yaxis_transform())  # x: axes fraction, y: data
    for method in dict.fromkeys(p.method for p in points):
        group = [p for p in points if p.method == method]
        colour = method_colour(method)
        axes.scatter([p.best_reduction * 100 for p in group], [p.top1 * 100 for p in group], color=colour,
                     label=method_title(method), s=28, zorder=3)
        front = pareto_front(group)
        axes.plot([p.best_reduction * 100 for p in front], [p.top1 * 100 for p in front], color=colour, linewidth=1.4)
    axes.set_xlabel("activation bandwidth reduction vs dense, best format (%)")
    axes.set_ylabel("top-1 (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def layers_png(report: TrafficReport, title: str) -> bytes:
    """Per-layer traffic per image of one model in every format (dense, ZVC, Zebra, Zebra+ZVC)."""
    names = [layer.name for layer in report.layers]
    figure, axes = plt.subplots(figsize=(max(7, 0.45 * len(names)), 4))
    width = 0.8 / len(FORMATS)
    for index, fmt in enumerate(FORMATS):
        axes.bar([i + (index - (len(FORMATS) - 1) / 2) * width for i in range(len(names))],
                 [layer.bytes[fmt] / max(report.images, 1) / 1024 for layer in report.layers], width,
                 label=format_title(fmt))
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("KB per image (write + reads)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


STRIPE_CHANNELS = 4  # channels drawn per layer in the stripe pictures: the most active ones after the mask


def stripes_png(maps: dict[str, tuple[torch.Tensor, torch.Tensor]], block_sizes: dict[str, Any], image: int,
                channels: int = STRIPE_CHANNELS) -> bytes:
    """One image's maps (rows: layers, labelled with the share of blocks the mask zeroed over all channels;
    columns: the ``channels`` most active channels after the mask) with the blocks the mask zeroed in red (the
    zebra stripes) and the blocks that were zero already paled."""
    sites = list(maps)
    figure, grid = plt.subplots(len(sites), channels, figsize=(1.6 * channels, 1.6 * len(sites)), squeeze=False)
    for row, site in zip(grid, sites):
        before, after = (t[image:image + 1] for t in maps[site])
        height, width = before.shape[-2:]
        was = nonzero_blocks(before, block_sizes[site])
        now = nonzero_blocks(after, block_sizes[site])
        zeroed = expand_blocks(was & ~now, block_sizes[site], height, width)[0]
        empty = expand_blocks(~was, block_sizes[site], height, width)[0]
        order = after[0].abs().flatten(1).sum(1).argsort(descending=True)[:channels]
        for axes, channel in zip(row, order.tolist()):
            axes.imshow(after[0, channel].numpy(), cmap="viridis", interpolation="nearest")
            overlay = torch.zeros(height, width, 4)
            overlay[zeroed[channel]] = torch.tensor([1.0, 0.0, 0.0, 0.6])
            overlay[empty[channel]] = torch.tensor([1.0, 1.0, 1.0, 0.45])
            axes.imshow(overlay.numpy(), interpolation="nearest")
            axes.set_title(f"channel {channel}", fontsize=6)
            axes.set_xticks([])
            axes.set_yticks([])
        share = (was & ~now).sum().item() / max(was.numel(), 1)
        row[0].set_ylabel(f"{site}\n{share:.0%} of blocks zeroed\n({before.shape[1]} channels)", fontsize=7)
    figure.suptitle(f"test image {image}: each layer's {channels} most active channels after the mask; red = blocks "
                    "zeroed by Zebra, pale = blocks already zero", fontsize=8)
    return _png(figure)
