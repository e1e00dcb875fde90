"""Results of runs as one list of points: which method, top-1, reduction per format; Pareto fronts and the
best reduction each method reaches within an accuracy budget."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHOD_TITLES = {
    "dense": "dense baseline",
    "l1": "L1 activation reg.",
    "zebra": "Zebra",
    "zebra-scratch": "Zebra from scratch",
    "slim": "Slimming",
    "slim-zebra": "Slimming+Zebra",
}
COMPRESSED = ("zvc", "zebra", "zebra_zvc")
# the rows of a `zebra run` / `zebra slim` report.json, and the folder of each row's model
REPORT_ROWS = {"dense baseline": ("dense", "baseline"), "Zebra": ("zebra", "zebra"), "Slimming": ("slim", "slim"),
               "Slimming+Zebra": ("slim-zebra", "slim-zebra")}


class ReportError(ValueError):
    """A folder given to ``zebra report`` holds no results it can read."""


@dataclass(frozen=True)
class Point:
    """One trained model: its method, settings, top-1 and bandwidth reduction against its dense baseline."""

    method: str
    label: str
    top1: float
    baseline_top1: float
    reduction: dict[str, float]
    folder: Path | None  # the run folder (last.pt, report.json) when it exists

    @property
    def best_format(self) -> str:
        return max(COMPRESSED, key=lambda fmt: self.reduction[fmt])

    @property
    def best_reduction(self) -> float:
        return self.reduction[self.best_format]

    @property
    def drop(self) -> float:
        """Top-1 lost against the baseline, in points (negative: a gain)."""
        return (self.baseline_top1 - self.top1) * 100


def load_points(run_dir: str | Path) -> list[Point]:
    """The points of a ``zebra sweep`` (sweep.json) or ``zebra run``/``zebra slim`` (report.json) folder."""
    run_dir = Path(run_dir)
    if (run_dir / "sweep.json").is_file():
        rows = _read(run_dir / "sweep.json")["rows"]
        base = next(row for row in rows if row["method"] == "dense")["top1"]
        return [Point(row["method"], row["point"], row["top1"], base, row["reduction"], Path(row["folder"]))
                for row in rows]
    if (run_dir / "report.json").is_file() and "rows" in (summary := _read(run_dir / "report.json")):
        rows = [row for row in summary["rows"] if row["model"] in REPORT_ROWS]
        base = next((row["top1"] for row in rows if row["model"] == "dense baseline"), None)
        if base is None:
            raise ReportError(f"{run_dir}/report.json has no dense baseline row to measure against")
        return [Point(REPORT_ROWS[row["model"]][0], f"{run_dir.name}: {row['model']}", row["top1"], base,
                      row["reduction"], run_dir / REPORT_ROWS[row["model"]][1]) for row in rows]
    raise ReportError(f"{run_dir} holds no sweep.json or report.json with result rows: give folders written by "
                      "zebra sweep, zebra run or zebra slim")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path} cannot be read as JSON ({error}); was the run interrupted while writing?") from error


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats in both top-1 and best-format reduction, by rising reduction."""
    scores = [(p.top1, p.best_reduction) for p in points]
    front = [p for p, (acc, red) in zip(points, scores)
             if not any(a >= acc and r >= red and (a, r) != (acc, red) for a, r in scores)]
    return sorted(front, key=lambda p: p.best_reduction)


def best_within(points: list[Point], budget_points: float = 1.0) -> dict[str, Point]:
    """Per method, the point of largest best-format reduction losing at most ``budget_points`` of top-1."""
    best: dict[str, Point] = {}
    for point in points:
        if point.drop <= budget_points + 1e-9 and (point.method not in best
                                                   or point.best_reduction > best[point.method].best_reduction):
            best[point.method] = point
    return best


def points_markdown(points: list[Point]) -> str:
    """Every point as a Markdown table row (top-1, drop, each format's reduction)."""
    head = "| method | point | top-1 % | drop (points) | " + " | ".join(
        f"{name} %" for name in ("ZVC", "Zebra", "Zebra+ZVC")) + " |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for p in points:
        cells = [METHOD_TITLES.get(p.method, p.method), p.label, f"{p.top1 * 100:.2f}", f"{p.drop:+.2f}"]
        cells += [f"{p.reduction[fmt] * 100:.2f}" for fmt in COMPRESSED]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_markdown(points: list[Point], budget_points: float = 1.0) -> str:
    """The best reduction of each method within the budget, as a Markdown table."""
    best = best_within(points, budget_points)
    lines = [f"| method | best reduction within {budget_points:g} point of top-1 | format | top-1 % | point |",
             "|---|---|---|---|---|"]
    for method in METHOD_TITLES:
        if method in best:
            p = best[method]
            lines.append(f"| {METHOD_TITLES[method]} | {p.best_reduction * 100:.2f} % | {_format_title(p.best_format)} "
                         f"| {p.top1 * 100:.2f} | {p.label} |")
        elif any(p.method == method for p in points):
            lines.append(f"| {METHOD_TITLES[method]} | none within the budget | | | |")
    return "\n".join(lines)


def _format_title(fmt: str) -> str:
    return {"zvc": "ZVC", "zebra": "Zebra", "zebra_zvc": "Zebra+ZVC"}.get(fmt, fmt)

