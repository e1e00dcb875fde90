"""``zebra sweep``: one dense baseline, then every method fine-tuned at every point of a grid, resumable,
with one row per point (top-1, bandwidth reduction per format against the baseline, per-layer densities)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any


from .._io import atomic_write_text
from ..core import FORMATS
from .checkpoint import load_checkpoint
from .config import ConfigError, RunConfig, SweepSection, from_dict, same_settings, save_config, with_value
from .run import machine
from .slimming import prune_checkpoint
from .trainer import CHECKPOINT, resolve_device, train

# What each method changes on top of the run's settings before its fine-tune.
METHODS: dict[str, dict[str, Any]] = {
    "zebra": {},  # Zebra as configured (block size, score, penalty, threshold policy), fine-tuned from the baseline
    "zebra-scratch": {},  # Zebra trained from scratch with the baseline's recipe (train section)
    # element-wise L1 activation regularisation (Georgiadis, CVPR 2019): no mask, ZVC compresses the zeros
    "l1": {"zebra.block_size": 1, "zebra.penalty": "l1", "zebra.threshold": 0.0, "zebra.density": None},
    "slim": {},  # Network Slimming: sparsity-train, prune, fine-tune without Zebra
    "slim-zebra": {},  # the pruned model fine-tuned with Zebra
}
BASELINE = "dense"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the grid's value lists, in order (one empty point for an empty grid)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid[{key!r}]={values!r} is invalid: give a non-empty list of values")
    return [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]


def point_name(method: str, point: dict[str, Any]) -> str:
    """A folder name that says what the point is (``zebra,zebra.lam=0.01,zebra.block_size=4``)."""
    text = ",".join([method] + [f"{key}={_text(value)}" for key, value in point.items()])
    return re.sub(r"[^\w.=,+-]", "_", text)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _method_points(sweep: SweepSection) -> list[tuple[str, dict[str, Any]]]:
    """(method, point) pairs: each method over the grid, then the extra points. A grid key ``method:key``
    (e.g. ``l1:zebra.lam``) varies only that method; a method's own settings win over the grid's, and
    points that collapse to the same settings (the block-size axis for ``l1``) are run once."""
    pairs = []
    for method in sweep.methods:
        axes = {key.split(":", 1)[-1]: values for key, values in sweep.grid.items()
                if ":" not in key or key.split(":", 1)[0] == method}
        pairs += [(method, point) for point in grid_points(axes)]
    for extra in sweep.points:
        if not isinstance(extra, dict) or extra.get("method") not in METHODS:
            raise ConfigError(f"sweep.points entry {extra!r} is invalid: give a mapping with a method "
                              f"({', '.join(METHODS)}) and settings, e.g. {{method: zebra, zebra.lam: 0.1}}")
        pairs.append((extra["method"], {key: value for key, value in extra.items() if key != "method"}))
    unique = []
    for method, point in pairs:
        kept = (method, {key: value for key, value in point.items() if key not in METHODS[method]})
        if kept not in unique:
            unique.append(kept)
    return unique


def _stage_config(values: dict[str, Any], changes: dict[str, Any]) -> RunConfig:
    """The RunConfig of one stage: ``values`` with ``changes`` and without the sweep section."""
    for key, value in changes.items():
        values = with_value(values, key, value)
    try:
        return from_dict({**values, "sweep": SweepSection().__dict__})
    except ConfigError as error:
        raise ConfigError(f"sweep point {changes}: {error}") from error


def _finished(folder: Path, config: RunConfig) -> dict[str, Any] | None:
    """The saved report of a stage finished with exactly ``config``, else None (so it is trained)."""
    report, checkpoint = folder / "report.json", folder / CHECKPOINT
    if not (report.is_file() and checkpoint.is_file()):
        return None
    payload = load_checkpoint(checkpoint)
    if not same_settings(payload["config"], config):
        raise ConfigError(f"{folder} was trained with other settings: use a new --run-dir for a changed sweep")
    return json.loads(report.read_text()) if payload["epoch"] >= payload["stage"]["epochs"] else None


def _stage(config: RunConfig, folder: Path, progress: bool, **kwargs: Any) -> tuple[dict[str, Any], float]:
    """(report dict, seconds) of a training stage, trained only when not finished already."""
    timing = folder / "seconds.json"
    done = _finished(folder, config)
    if done is not None:
        return done, json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    result = train(config, folder, resume=True, progress=progress, **kwargs)
    atomic_write_text(timing, json.dumps({"seconds": result.seconds}))
    return result.report.to_dict(), result.seconds


def _row(name: str, method: str, point: dict[str, Any], report: dict[str, Any], baseline: dict[str, Any],
         seconds: float, folder: Path) -> dict[str, Any]:
    dense = baseline["bytes"]["dense"]
    return {
        "point": name, "method": method, "settings": point, "top1": report["accuracy"],
        "delta_top1": report["accuracy"] - baseline["accuracy"],
        "reduction": {fmt: 1 - report["bytes"][fmt] / dense for fmt in FORMATS},
        "layers": {layer["name"]: {"density": layer["density"], "block_density": layer["block_density"]}
                   for layer in report["layers"]},
        "seconds": seconds, "folder": str(folder),
    }


def run_sweep(config: RunConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the baseline once, then every (method, grid point) not finished yet; rewrite ``sweep.json`` and
    ``sweep.csv`` after each. Rerunning the same command continues where it stopped."""
    run_dir = Path(run_dir)
    unknown = sorted(set(config.sweep.methods) - set(METHODS))
    if unknown or not config.sweep.methods:
        raise ConfigError(f"sweep.methods={config.sweep.methods!r} is invalid: use some of {', '.join(METHODS)}")
    values = config.to_dict()
    scopes = {key.split(":", 1)[0] for key in config.sweep.grid if ":" in key}
    if scopes - set(config.sweep.methods):
        raise ConfigError(f"sweep.grid names methods {sorted(scopes - set(config.sweep.methods))} that sweep.methods "
                          f"does not run ({config.sweep.methods})")
    plan = [(method, point, _stage_config(values, {**point, **METHODS[method]}))
            for method, point in _method_points(config.sweep)]  # every point validated before any training
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    base_config = _stage_config(values, {})
    print(f"[baseline] {base_config.train.epochs} epochs -> {run_dir / 'baseline'}", flush=True)
    baseline, seconds = _stage(base_config, run_dir / "baseline", progress, stage=base_config.train, zebra=False)
    rows = [_row(BASELINE, BASELINE, {}, baseline, baseline, seconds, run_dir / "baseline")]
    for index, (method, point, stage_config) in enumerate(plan, 1):
        name = point_name(method, point)
        folder = run_dir / "points" / name
        print(f"[{index}/{len(plan)}] {name}", flush=True)
        stage, init, extra = stage_config.finetune, run_dir / "baseline" / CHECKPOINT, 0.0
        if method.startswith("slim"):
            slim_settings = {key: value for key, value in point.items() if key.startswith("slim.")}
            init, extra = _pruned(_stage_config(values, slim_settings), run_dir, progress)
        elif method == "zebra-scratch":
            stage, init = stage_config.train, None
        report, seconds = _stage(stage_config, folder, progress, stage=stage, zebra=method != "slim", init=init)
        rows.append(_row(name, method, point, report, baseline, seconds + extra, folder))
        _write(run_dir, config, rows, time.perf_counter() - started)
    return _write(run_dir, config, rows, time.perf_counter() - started)


def _pruned(config: RunConfig, run_dir: Path, progress: bool) -> tuple[Path, float]:
    """The pruned checkpoint for ``config.slim`` (its sparsity-trained model is shared by all its points)."""
    folder = run_dir / f"sparse-s{config.slim.s:g}"
    _, seconds = _stage(config, folder, progress, stage=config.train, zebra=False, sparsity=config.slim.s)
    pruned = folder / f"pruned-r{config.slim.ratio:g}-m{config.slim.min_channels}.pt"
    if not pruned.is_file():
        prune_checkpoint(folder / CHECKPOINT, pruned)
    return pruned, seconds


def _write(run_dir: Path, config: RunConfig, rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    summary = {
        "command": "zebra sweep", "config": config.to_dict(),
        "machine": machine(resolve_device(config.device)),
        "wall_seconds": seconds, "rows": rows,
    }
    atomic_write_text(run_dir / "sweep.json", json.dumps(summary, indent=2))
    keys = sorted({key for row in rows for key in row["settings"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["point", "method", *keys, "top1", "delta_top1", *(f"reduction_{f}" for f in FORMATS), "seconds"])
    for row in rows:
        writer.writerow([row["point"], row["method"], *(_text(row["settings"][k]) if k in row["settings"] else ""
                                                        for k in keys),
                         f"{row['top1']:.4f}", f"{row['delta_top1']:+.4f}",
                         *(f"{row['reduction'][f]:.4f}" for f in FORMATS), f"{row['seconds']:.1f}"])
    atomic_write_text(run_dir / "sweep.csv", out.getvalue())
    return summary
