"""README.md's results box, generated from docs/results.json (which benchmarks/reference.py writes) between two
marker comments; ``--check`` exits 1 when the box differs from what the JSON gives.

    .venv/bin/python benchmarks/readme_box.py [--check]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README, RESULTS = ROOT / "README.md", ROOT / "docs" / "results.json"
BEGIN = "<!-- results box: generated from docs/results.json by benchmarks/readme_box.py; do not edit by hand -->"
END = "<!-- end of the results box -->"
WIDTH = 118


def _drop(points: float) -> str:
    """A top-1 change in points, a loss negative; never ``-0.00``."""
    return f"{-points:+.2f}" if round(points, 2) else "0.00"


def _main_rows(results: dict) -> list[str]:
    """The main job's rows: the dense baseline in ZVC and Zebra, means over the seeds."""
    seeds, summary = results["main_job"], results["main_job_summary"]
    baseline = statistics.mean(entry["baseline_top1"] for entry in seeds)
    zebra = statistics.mean(entry["zebra_top1"] for entry in seeds)
    zvc = statistics.mean(entry["zvc_of_baseline"] for entry in seeds)
    count = f"mean of {len(seeds)} seeds"
    return [f"| ResNet-18, dense baseline in ZVC ({count}) | {baseline:.2%} | | {zvc:.1%} |",
            f"| ResNet-18, Zebra retrained from it ({count}) | {zebra:.2%} | {_drop(summary['mean_top1_drop_points'])}"
            f" | **{summary['mean_zebra_zvc_reduction']:.1%}** |"]


def _other_rows(results: dict) -> list[str]:
    """The strongest recipe within the budget where it is not the main job's, Zebra without training, then the
    other networks (seed 0)."""
    rows = []
    best = results.get("best")
    if best and not best["label"].startswith("main-seed"):
        rows.append(f"| ResNet-18, Zebra with fewer kept blocks, retrained longer (seed 0; `{best['label']}`) | "
                    f"{best['top1']:.2%} | {_drop(best['top1_drop_points'])} | **{best['reduction']:.1%}** |")
    calibrated = results.get("no_training")
    if calibrated:
        top1 = next(point["top1"] for point in results["points"] if point["label"] == calibrated["label"])
        rows.append(f"| ResNet-18, Zebra calibrated without training (seed 0) | {top1:.2%} | "
                    f"{_drop(calibrated['top1_drop_points'])} | {calibrated['reduction']:.1%} |")
    for net in results.get("architectures", []):
        drop = _drop((net["baseline_top1"] - net["zebra_top1"]) * 100)
        rows.append(f"| {net['model']}, Zebra retrained (seed 0; its baseline in ZVC: "
                    f"{net['dense_zvc_reduction']:.1%}) | {net['zebra_top1']:.2%} | {drop} | "
                    f"{net['zebra_zvc_reduction']:.1%} |")
    return rows


def box(results: dict) -> str:
    """The box's Markdown between the markers: the headline, the table and its caveats."""
    summary, control = results["main_job_summary"], results.get("best_against_control")
    headline = (f"**Zebra+ZVC moves {summary['mean_zebra_zvc_reduction']:.1%} fewer activation bytes than the dense "
                f"baseline at {summary['mean_top1_drop_points']:.2f} points of top-1** (mean of {summary['seeds']} "
                f"seeds, std {summary['std_zebra_zvc_reduction']:.1%}; largest loss "
                f"{summary['max_top1_drop_points']:.2f} points; target: {results['target']:.0%} within "
                f"{results['budget_points']:g} point).")
    table = ["| model | top-1 | Δ top-1 (points) | activation traffic cut, Zebra+ZVC |", "|---|---|---|---|",
             *_main_rows(results), *_other_rows(results)]
    notes = [
        "Every row is on Fashion-MNIST padded to 32x32, trained on a 2-core CPU; the ResNet-18 is of width 16 (CIFAR "
        "stem), and one `make run` trains its main job (how long: \"Two commands\" below). The `paper` preset "
        "(ResNet-18 on Tiny-ImageNet, for a GPU) has never been run at paper scale.",
        "The cut is 1 - bytes / the dense baseline's dense bytes, over the map of every activation call (8-bit "
        "values, block and ZVC metadata included, one write plus one read per consumer); weights and the input "
        "image are not counted.",
    ]
    if control:
        notes.append("Zebra's retraining adds epochs to the baseline's: against the dense baseline retrained as long "
                     f"(the control), the loss is {control['top1_drop_points']:.2f} points (seed 0).")
    notes.append(f"Every figure, every method and how it was run: [docs/RESULTS.md](docs/RESULTS.md) "
                 f"(`{results['generated_by']}`).")
    bullets = [textwrap.fill(note, WIDTH, initial_indent="- ", subsequent_indent="  ") for note in notes]
    return "\n".join([BEGIN, textwrap.fill(headline, WIDTH), "", *table, "", *bullets, END])


def with_box(readme: str, results: dict) -> str:
    """``readme`` with the text between the markers replaced by ``box(results)``."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise SystemExit(f"README.md needs each marker once: {BEGIN} and {END}")
    head, rest = readme.split(BEGIN, 1)
    return head + box(results) + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    """Rewrite README.md's box, or with ``--check`` say whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's box is not what it should be")
    args = parser.parse_args(argv)
    readme, results = README.read_text(), json.loads(RESULTS.read_text())
    wanted = with_box(readme, results)
    if args.check:
        print("README.md's results box is current" if wanted == readme else "README.md's results box is stale")
        return int(wanted != readme)
    README.write_text(wanted)
    print(f"{README}: results box rewritten from {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
