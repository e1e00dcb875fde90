"""Markdown tables of results: the model rows, per-layer traffic, and the whole report of a run or slim flow."""

from __future__ import annotations

from ..analysis.measure import TrafficReport
from ..core import COMPRESSED, FORMATS, format_title
from .methods import METHODS
from .schema import ModelRow, RunResult

# One sign convention for every top-1 change the project prints: the model's top-1 minus the reference's, in
# points, so a loss is negative; each table says so in its header.
DELTA_TOP1_TITLE = "Δ top-1 (points, negative = loss)"


def points_change(delta_points: float) -> str:
    """A top-1 change in points, signed as ``DELTA_TOP1_TITLE`` says (``-0.13`` is a loss of 0.13 points)."""
    return f"{round(delta_points, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00" for a change that rounds to nothing


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def rows_markdown(rows: tuple[ModelRow, ...] | list[ModelRow]) -> str:
    """The model rows as a Markdown table (with parameter and MAC columns when every row has them)."""
    costs = all(row.params is not None for row in rows)
    titles = ["model", "top-1 %", DELTA_TOP1_TITLE] + (["params", "MMACs/image"] if costs else [])
    titles += [f"{format_title(f)} reduction %" for f in FORMATS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [row.label, _pct(row.top1), _pct(row.delta_top1, True)]
        cells += [f"{row.params:,}", f"{row.macs / 1e6:.2f}"] if costs else []
        cells += [_pct(row.reduction[fmt]) for fmt in FORMATS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layers_markdown(baseline: TrafficReport, model: TrafficReport) -> str:
    """Per-layer block density of both models and the model's reduction per compressed format."""
    titles = ["layer", "shape", "reads", "baseline block density %", "Zebra block density %"]
    titles += [f"{format_title(f)} %" for f in COMPRESSED]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    base = {row.name: row for row in baseline.layers}
    for row in model.layers:
        ref = base.get(row.name)
        cells = [row.name, row.shape_text, str(row.consumers), _pct(ref.block_density) if ref else "n/a",
                 _pct(row.block_density)]
        cells += [_pct(row.reduction(fmt)) for fmt in COMPRESSED]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shapes_markdown(reports: dict[str, TrafficReport], reference: str, fmt: str = "zebra_zvc") -> str:
    """Per layer: each model's map shape and its ``fmt`` traffic as a reduction of the reference layer's dense bytes."""
    ref = {row.name: row for row in reports[reference].layers}
    names = list(reports)
    head = (["layer", "reads"] + [f"{name} shape" for name in names]
            + [f"{name} {format_title(fmt)} %" for name in names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_name = [{row.name: row for row in report.layers} for report in reports.values()]
    for layer in reports[reference].layers:
        rows = [layers.get(layer.name) for layers in by_name]
        cells = [layer.name, str(layer.consumers)] + [row.shape_text if row else "n/a" for row in rows]
        cells += [_pct(1 - row.bytes[fmt] / ref[layer.name].bytes["dense"]) if row and ref[layer.name].bytes["dense"]
                  else "n/a" for row in rows]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_markdown(result: RunResult) -> str:
    """The whole report of ``zebra run`` (dense baseline and Zebra model) as Markdown."""
    config = result.config
    zebra = config["zebra"]
    baseline, model = result.rows[0].traffic, result.rows[1].traffic
    scratch = METHODS[result.rows[1].method].start == "scratch"
    recipe = ("Zebra trained from scratch with the same recipe and seed" if scratch
              else f"Zebra fine-tuned {config['finetune']['epochs']} epochs from it")
    distill = config.get("distill", {"weight": 0})
    if distill["weight"]:
        cached = ", its targets cached" if distill.get("targets") == "cached" else ""  # older results lack the key
        recipe += (f", distilled from the baseline (weight {distill['weight']:g}, "
                   f"temperature {distill['temperature']:g}{cached})")
    policy = (f"thresholds calibrated to keep {zebra['density']} of the blocks (ramp {zebra['density_ramp_steps']} "
              f"steps, every {zebra['calibrate_every']} steps)" if zebra["density"] is not None
              else f"threshold {zebra['threshold']}")
    return "\n".join([
        "# torchzebra run",
        "",
        result.info.markdown(),
        "",
        f"Model {config['model']['name']} {config['model']['options']} on {config['data']['name']}; "
        f"baseline {config['train']['epochs']} epochs, {recipe} "
        f"(block {zebra['block_size']}, score {zebra['score']}, {policy}, "
        f"penalty {zebra['penalty']}, lambda {zebra['lam_epochs'] or zebra['lam']}); "
        f"{config['bits']}-bit data, metadata counted, one write plus one read per consumer, "
        f"{model.images} test images. Reductions are against the baseline's dense traffic.",
        "",
        rows_markdown(result.rows),
        "",
        f"## Per layer ({result.rows[1].label} model)",
        "",
        layers_markdown(baseline, model),
        "",
    ])


def slim_markdown(result: RunResult, flow: str) -> str:
    """The whole report of a ``zebra slim`` flow as Markdown."""
    config, s = result.config, result.config["slim"]
    shown = {row.label: row.traffic for row in result.rows
             if row.label == result.reference or row.method not in METHODS or METHODS[row.method].final}
    return "\n".join([
        f"# torchzebra Network Slimming — flow `{flow}`",
        "",
        result.info.markdown(),
        "",
        f"Model {config['model']['name']} {config['model']['options']} on {config['data']['name']}. Slimming: "
        f"sparsity s={s['s']:g} on every BatchNorm scale for {config['train']['epochs']} epochs, {s['ratio']:.0%} of "
        f"the BatchNorm channels removed (global |gamma| threshold, coupled residual channels together, at least "
        f"{s['min_channels']} channel(s) per layer), fine-tuned {config['finetune']['epochs']} epochs. Zebra block "
        f"{config['zebra']['block_size']}, density {config['zebra']['density']}. {config['bits']}-bit data, metadata "
        f"counted, one write plus one read per consumer. Every reduction is against the dense traffic of "
        f"'{result.reference}' (the slimmed models' smaller maps count as they are).",
        "",
        rows_markdown(result.rows),
        "",
        "## Per layer: map shapes and Zebra+ZVC traffic (reduction of the reference layer's dense bytes)",
        "",
        shapes_markdown(shown, result.reference),
        "",
    ])


def allocation_markdown(rows: tuple[ModelRow, ...] | list[ModelRow]) -> str:
    """Per layer, the density each calibrated row keeps (its ``settings["densities"]``), with the block size
    (``settings["block_sizes"]``) beside it where the rows' block sizes are not all one."""
    calibrated = [row for row in rows if "densities" in row.settings]
    sites = list(dict.fromkeys(site for row in calibrated for site in row.settings["densities"]))
    sizes = {str(size) for row in calibrated for size in row.settings.get("block_sizes", {}).values()}

    def cell(row: ModelRow, site: str) -> str:
        size = row.settings.get("block_sizes", {}).get(site)
        kept = _pct(row.settings["densities"].get(site))
        return f"{kept} (block {size})" if len(sizes) > 1 and size is not None else kept

    titles = ["layer"] + [f"{row.label}: kept blocks %" for row in calibrated]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for site in sites:
        lines.append("| " + " | ".join([site] + [cell(row, site) for row in calibrated]) + " |")
    return "\n".join(lines)
