"""Side-by-side comparison of models: top-1 and activation bandwidth reduction per format."""

from __future__ import annotations

from typing import Any

from ..core import FORMATS
from ..measure import TrafficReport

FORMAT_TITLES = {"dense": "dense", "zvc": "ZVC", "zebra": "Zebra", "zebra_zvc": "Zebra+ZVC"}


def comparison_rows(reports: dict[str, TrafficReport], reference: str) -> list[dict[str, Any]]:
    """One row per model; reductions are against the *reference* model's dense bytes."""
    ref = reports[reference]
    ref_dense = ref.total_bytes("dense")
    return [
        {
            "model": name,
            "top1": report.accuracy,
            "delta_top1": None if report.accuracy is None or ref.accuracy is None else report.accuracy - ref.accuracy,
            "reduction": {fmt: 1 - report.total_bytes(fmt) / ref_dense for fmt in FORMATS},
            "bytes_per_image": {fmt: report.total_bytes(fmt) / max(report.images, 1) for fmt in FORMATS},
        }
        for name, report in reports.items()
    ]


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a Markdown table."""
    head = "| model | top-1 % | Δ top-1 (points) | " + " | ".join(f"{FORMAT_TITLES[f]} reduction %" for f in FORMATS) + " |"
    lines = [head, "|" + "---|" * (3 + len(FORMATS))]
    for row in rows:
        cells = [row["model"], _pct(row["top1"]), _pct(row["delta_top1"], True)]
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


def comparison_markdown(summary: dict[str, Any], baseline: TrafficReport, model: TrafficReport) -> str:
    """The whole report of ``zebra run`` as Markdown."""
    config, machine = summary["config"], summary["machine"]
    zebra = config["zebra"]
    policy = (f"thresholds calibrated to keep {zebra['density']} of the blocks (ramp {zebra['density_ramp_steps']} "
              f"steps, every {zebra['calibrate_every']} steps)" if zebra["density"] is not None
              else f"threshold {zebra['threshold']}")
    return "\n".join([
        "# torchzebra run",
        "",
        f"Command: `{summary['command']}`; machine: {machine['platform']}, {machine['cpus']} threads, "
        f"torch {machine['torch']} on {machine['device']}; wall time {summary['wall_seconds'] / 60:.1f} min.",
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
