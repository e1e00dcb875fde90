"""Side-by-side comparison of models: top-1 and activation bandwidth reduction per format."""

from __future__ import annotations

from typing import Any

from ..core import FORMATS
from ..cost import ModelCost
from ..measure import TrafficReport

FORMAT_TITLES = {"dense": "dense", "zvc": "ZVC", "zebra": "Zebra", "zebra_zvc": "Zebra+ZVC"}


def comparison_rows(
    reports: dict[str, TrafficReport], reference: str, costs: dict[str, ModelCost] | None = None
) -> list[dict[str, Any]]:
    """One row per model; reductions are against the *reference* model's dense bytes. With ``costs``,
    each row also gives the model's parameters and MACs per image."""
    ref = reports[reference]
    ref_dense = ref.total_bytes("dense")
    rows = []
    for name, report in reports.items():
        row = {
            "model": name,
            "top1": report.accuracy,
            "delta_top1": None if report.accuracy is None or ref.accuracy is None else report.accuracy - ref.accuracy,
            "reduction": {fmt: 1 - report.total_bytes(fmt) / ref_dense for fmt in FORMATS},
            "bytes_per_image": {fmt: report.total_bytes(fmt) / max(report.images, 1) for fmt in FORMATS},
        }
        if costs is not None:
            row.update(params=costs[name].params, macs=costs[name].macs)
        rows.append(row)
    return rows


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a Markdown table (with parameter and MAC columns when the rows have them)."""
    costs = all("params" in row for row in rows)
    titles = ["model", "top-1 %", "Δ top-1 (points)"] + (["params", "MMACs/image"] if costs else [])
    titles += [f"{FORMAT_TITLES[f]} reduction %" for f in FORMATS]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [row["model"], _pct(row["top1"]), _pct(row["delta_top1"], True)]
        cells += [f"{row['params']:,}", f"{row['macs'] / 1e6:.2f}"] if costs else []
        cells += [_pct(row["reduction"][fmt]) for fmt in FORMATS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layers_markdown(baseline: TrafficReport, model: TrafficReport) -> str:
    """Per-layer block density of both models and the model's reduction per format."""
    lines = [
        "| layer | shape | reads | baseline block density % | Zebra block density % | ZVC % | Zebra % | Zebra+ZVC % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {row.name: row for row in baseline.layers}
    for row in model.layers:
        ref = base.get(row.name)
        cells = [row.name, row.shape_text, str(row.consumers), _pct(ref.block_density) if ref else "n/a",
                 _pct(row.block_density)]
        cells += [_pct(row.reduction(fmt)) for fmt in ("zvc", "zebra", "zebra_zvc")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_line(summary: dict[str, Any]) -> str:
    """The command, machine and wall time of a summary, as one Markdown line."""
    machine = summary["machine"]
    return (f"Command: `{summary['command']}`; machine: {machine['platform']}, {machine['cpus']} threads, "
            f"torch {machine['torch']} on {machine['device']}; wall time {summary['wall_seconds'] / 60:.1f} min.")


def comparison_markdown(summary: dict[str, Any], baseline: TrafficReport, model: TrafficReport) -> str:
    """The whole report of ``zebra run`` as Markdown."""
    config = summary["config"]
    zebra = config["zebra"]
    policy = (f"thresholds calibrated to keep {zebra['density']} of the blocks (ramp {zebra['density_ramp_steps']} "
              f"steps, every {zebra['calibrate_every']} steps)" if zebra["density"] is not None
              else f"threshold {zebra['threshold']}")
    return "\n".join([
        "# torchzebra run",
        "",
        run_line(summary),
        "",
        f"Model {config['model']['name']} {config['model']['options']} on {config['data']['name']}; "
        f"baseline {config['train']['epochs']} epochs, Zebra fine-tuned {config['finetune']['epochs']} epochs from it "
        f"(block {zebra['block_size']}, score {zebra['score']}, {policy}, "
        f"penalty {zebra['penalty']}, lambda {zebra['lam_epochs'] or zebra['lam']}); "
        f"{config['bits']}-bit data, metadata counted, one write plus one read per consumer, "
        f"{model.images} test images. Reductions are against the baseline's dense traffic.",
        "",
        rows_markdown(summary["rows"]),
        "",
        "## Per layer (Zebra model)",
        "",
        layers_markdown(baseline, model),
        "",
    ])


def shapes_markdown(reports: dict[str, TrafficReport], reference: str, fmt: str = "zebra_zvc") -> str:
    """Per layer: each model's map shape and its ``fmt`` traffic as a reduction of the reference layer's dense bytes."""
    ref = {row.name: row for row in reports[reference].layers}
    names = list(reports)
    head = ["layer", "reads"] + [f"{name} shape" for name in names] + [f"{name} {FORMAT_TITLES[fmt]} %" for name in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_name = [{row.name: row for row in report.layers} for report in reports.values()]
    for layer in reports[reference].layers:
        rows = [layers.get(layer.name) for layers in by_name]
        cells = [layer.name, str(layer.consumers)] + [row.shape_text if row else "n/a" for row in rows]
        cells += [_pct(1 - row.bytes[fmt] / ref[layer.name].bytes["dense"]) if row and ref[layer.name].bytes["dense"]
                  else "n/a" for row in rows]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
