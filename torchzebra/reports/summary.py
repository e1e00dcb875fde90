"""Results of runs as one list of points: which method, top-1, reduction per format; Pareto fronts and the
best reduction each method reaches within an accuracy budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._numbers import counted
from ..analysis.measure import TrafficReport
from ..core import COMPRESSED, format_title
from ..errors import ZebraError
from ..results import BASELINE, CHECKPOINT, METHODS, ResultError, method_title, read_result, result_file
from ..results.tables import DELTA_TOP1_TITLE, points_change


class ReportError(ZebraError):
    """A folder given to ``zebra report`` holds no results it can read."""


@dataclass(frozen=True)
class Point:
    """One trained model: its method, settings, top-1 and bandwidth reduction against its dense baseline."""

    method: str
    label: str
    top1: float
    baseline_top1: float
    reduction: dict[str, float]
    folder: Path | None  # the stage folder (last.pt, report.json) when it exists
    traffic: TrafficReport | None = None

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

    @property
    def delta(self) -> float:
        """Top-1 change against the baseline, in points, as every table prints it (negative: a loss)."""
        return -self.drop

    @property
    def checkpoint(self) -> Path | None:
        """The model's checkpoint, when its folder still holds one."""
        path = self.folder / CHECKPOINT if self.folder else None
        return path if path and path.is_file() else None


def load_points(run_dir: str | Path) -> list[Point]:
    """The finished models of a ``zebra sweep``, ``zebra run`` or ``zebra slim`` folder, as points against its
    dense baseline (a run's labels are prefixed with the folder's name; a sweep's are its point names)."""
    run_dir = Path(run_dir)
    path = result_file(run_dir)
    if path is None:
        raise ReportError(f"{run_dir} holds no sweep.json or report.json with result rows: give folders written by "
                          "zebra sweep, zebra run or zebra slim")
    try:
        result = read_result(path)
    except ResultError as error:
        raise ReportError(str(error)) from error
    base = result.by_method(BASELINE)
    if base is None:
        raise ReportError(f"{path} has no dense baseline row to measure against")
    final = [row for row in result.rows if row.method in METHODS and METHODS[row.method].final]
    return [Point(row.method, row.label if result.kind == "sweep" else f"{run_dir.name}: {row.label}", row.top1,
                  base.top1, row.reduction, row.folder, row.traffic) for row in final]


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
    """Every point as a Markdown table row (top-1, its change against the baseline, each format's reduction)."""
    titles = ["method", "point", "top-1 %", DELTA_TOP1_TITLE] + [f"{format_title(f)} %" for f in COMPRESSED]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for p in points:
        cells = [method_title(p.method), f"`{p.label}`", f"{p.top1 * 100:.2f}", points_change(p.delta)]
        cells += [f"{p.reduction[fmt] * 100:.2f}" for fmt in COMPRESSED]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_markdown(points: list[Point], budget_points: float = 1.0) -> str:
    """The best reduction of each method within the budget, as a Markdown table."""
    best = best_within(points, budget_points)
    lines = [f"| method | best reduction within {counted(budget_points, 'point')} of top-1 | format | top-1 % "
             "| point |",
             "|---|---|---|---|---|"]
    for method in dict.fromkeys([*METHODS, *(p.method for p in points)]):
        if method in best:
            p = best[method]
            lines.append(f"| {method_title(method)} | {p.best_reduction * 100:.2f} % | {format_title(p.best_format)} "
                         f"| {p.top1 * 100:.2f} | `{p.label}` |")
        elif any(p.method == method for p in points):
            lines.append(f"| {method_title(method)} | none within the budget | | | |")
    return "\n".join(lines)

