"""``zebra report``: runs -> one self-contained HTML page (PNG figures embedded) and a Markdown summary."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Callable

import torch

from .._io import atomic_write_bytes, atomic_write_text
from .._numbers import counted
from ..core import COMPRESSED, format_title
from ..results import METHODS, method_title, stage_traffic
from ..results.tables import DELTA_TOP1_TITLE, points_change
from . import plots
from .roofline import estimate_figures
from .summary import Point, ReportError, best_within, budget_markdown, load_points, points_markdown

# Sets data-images / data-loaded / data-errors on <body>, so a headless browser can check the page.
_CHECK_SCRIPT = """<script>
window.addEventListener('error', () => { document.body.dataset.errors = +(document.body.dataset.errors || 0) + 1; });
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


MapPictures = dict[str, tuple[torch.Tensor, torch.Tensor]]  # site -> (map before, map after its mask), N images
# What draws the masks: a checkpoint -> its maps of a few test images and each site's block size.
Capture = Callable[[Path], tuple[MapPictures, dict[str, Any]]]


def showcase(points: list[Point], budget_points: float) -> Point | None:
    """The model whose layers (and masks, when its checkpoint is still there) the report shows: the Zebra model
    of largest reduction within the budget, else of largest reduction."""
    zebra = [p for p in points if METHODS[p.method].zebra_masks]
    within = list(best_within(zebra, budget_points).values())
    pool = within or zebra
    return max(pool, key=lambda p: p.best_reduction) if pool else None


def pareto_caption(points: list[Point]) -> str:
    """The Pareto figure's caption: it mentions front lines only when a method has two points or more to join."""
    counts = [sum(p.method == m for p in points) for m in dict.fromkeys(p.method for p in points)]
    lines = ("; lines: the Pareto front of each method with two points or more" if max(counts) > 1
             else " (one point per method: no front to draw; a zebra sweep gives several)")
    return f"Top-1 against activation bandwidth reduction{lines}"


def stripes_caption(label: str, image: int) -> str:
    """The caption of a stripe picture: it shows a few channels per layer, so it says which and how many."""
    return (f"Activation maps of {label}, test image {image}: per layer, the {plots.STRIPE_CHANNELS} channels of "
            "largest activation after the mask (other channels may be zeroed more; the row label gives the share "
            "of the layer's blocks zeroed over all its channels)")


def _mask_pictures(point: Point, capture: Capture) -> list[bytes]:
    """Zebra-stripe pictures of every captured image for three layers (early, middle, late) of a model."""
    maps, blocks = capture(point.checkpoint)
    spatial = [site for site, (before, _) in maps.items() if min(before.shape[-2:]) >= 4]
    chosen = list(dict.fromkeys([spatial[0], spatial[len(spatial) // 2], spatial[-1]])) if spatial else []
    subset = {site: maps[site] for site in chosen}
    images = next(iter(maps.values()))[0].shape[0] if maps else 0
    return [plots.stripes_png(subset, blocks, image) for image in range(images)] if subset else []


def build_report(run_dirs: list[str | Path], out: str | Path, *, budget_points: float = 1.0,
                 capture: Capture | None = None) -> dict[str, Any]:
    """Write ``report.html`` (self-contained), ``report.md`` and the PNG figures into ``out``; with ``capture``,
    pictures of the showcased model's masks too."""
    points = [point for run_dir in run_dirs for point in load_points(run_dir)]
    if not points:
        raise ReportError("the runs hold no results")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str, bytes]] = [
        ("pareto.png", pareto_caption(points), plots.pareto_png(points, budget_points))]
    chosen = showcase(points, budget_points)
    traffic = stage_traffic(chosen.traffic, chosen.folder) if chosen else None
    if traffic is not None:
        figures.append(("layers.png", f"Traffic per layer of {chosen.label}", plots.layers_png(traffic, chosen.label)))
    if chosen is not None and chosen.checkpoint is not None and capture is not None:
        for index, png in enumerate(_mask_pictures(chosen, capture)):
            figures.append((f"stripes-{index}.png", stripes_caption(chosen.label, index), png))
    for index, run_dir in enumerate(run_dirs):  # runs with an estimate.json: rooflines and stalls per preset
        figures += estimate_figures(run_dir, f"{index}-" if len(run_dirs) > 1 else "")
    for name, _, png in figures:
        atomic_write_bytes(out / name, png)
    budget = budget_markdown(points, budget_points)
    markdown = "\n".join([
        "# torchzebra report", "", f"Runs: {', '.join(str(d) for d in run_dirs)}.", "",
        f"## Best reduction within {counted(budget_points, 'point')} of the dense baseline's top-1", "", budget, "",
        "## Every point", "", points_markdown(points), "",
        *[f"![{caption}]({name})\n" for name, caption, _ in figures],
    ])
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(run_dirs, points, figures, budget_points))
    return {"points": len(points), "figures": [name for name, _, _ in figures], "showcase": chosen and chosen.label}


def _html(run_dirs, points: list[Point], figures, budget_points: float) -> str:
    best = best_within(points, budget_points)
    rows = "".join(
        f"<tr><td>{html.escape(method_title(p.method))}</td><td>{html.escape(p.label)}</td>"
        f"<td>{p.top1 * 100:.2f}</td><td>{points_change(p.delta)}</td>"
        + "".join(f"<td>{p.reduction[f] * 100:.2f}</td>" for f in COMPRESSED) + "</tr>"
        for p in points)
    headline = "".join(
        f"<li><b>{html.escape(method_title(m))}</b>: {p.best_reduction * 100:.1f} % less activation traffic "
        f"({html.escape(format_title(p.best_format))}) at top-1 {p.top1 * 100:.2f} % "
        f"({points_change(p.delta)} points against the baseline)</li>"
        for m, p in best.items())
    heads = "".join(f"<th>{html.escape(title)}</th>" for title in ("method", "point", "top-1 %", DELTA_TOP1_TITLE))
    heads += "".join(f"<th>{html.escape(format_title(f))} %</th>" for f in COMPRESSED)
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for _, caption, png in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>torchzebra report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td, th {{ border: 1px solid #ccc; padding: 3px 7px; }}
th {{ background: #f3f3f3; }} figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.85em; }}
</style>{_CHECK_SCRIPT}</head>
<body>
<h1>torchzebra report</h1>
<p>Runs: {html.escape(', '.join(str(d) for d in run_dirs))}. Reductions are against each run's dense baseline
(one write plus one read per consumer of every activation map, metadata counted).</p>
<h2>Best within {counted(budget_points, 'point')} of the baseline's top-1</h2>
<ul>{headline or '<li>no point within the budget</li>'}</ul>
<h2>Every point</h2>
<table><tr>{heads}</tr>{rows}</table>
{images}
</body></html>
"""
