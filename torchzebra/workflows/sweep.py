"""``zebra sweep``: one dense baseline, then every method fine-tuned at every point of a grid, resumable,
with one row per point (top-1, bandwidth reduction per format against the baseline, per-layer densities)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .._numbers import counted, yaml_numbers
from ..analysis.measure import TrafficReport
from ..config.run import (
    ConfigError,
    RunConfig,
    SweepSection,
    ZebraSection,
    from_dict,
    save_config,
    stage_differences,
    with_value,
)
from ..core import FORMATS
from ..nn.config import ZebraConfig
from ..results import (
    BASELINE,
    CHECKPOINT,
    METHODS,
    REPORT,
    SPARSE_STAGE,
    SWEEP,
    ModelRow,
    RunResult,
    method_extensions,
    read_result,
    sweep_methods,
    write_result,
)
from ..training.building import resolve_device
from ..training.checkpoint import load_checkpoint
from ..training.extensions import distillation
from ..training.opening import load_trained
from ..training.precision import resolved
from ..training.trainer import TrainResult, train
from .pruning import prune_checkpoint
from .run import run_info, stage_row


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the grid's value lists, in order (one empty point for an empty grid)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid[{key!r}]={values!r} is invalid: give a non-empty list of values")
    numbers = {key: yaml_numbers(values) for key, values in grid.items()}  # `[1e-3, 1e-2]`: YAML reads text
    return [dict(zip(numbers, combination)) for combination in itertools.product(*numbers.values())]


def point_name(method: str, point: dict[str, Any]) -> str:
    """A folder name that says what the point is (``zebra,zebra.lam=0.01,zebra.block_size=4``)."""
    text = ",".join([method] + [f"{key}={_text(value)}" for key, value in point.items()])
    return re.sub(r"[^\w.=,+-]", "_", text)


def point_label(method: str, point: dict[str, Any]) -> str:
    """What reports call the point: its folder name, but mappings as written (``{layer3.*: 0.3, *: 0.15}``)."""
    def text(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key}: {_text(item)}" for key, item in value.items()) + "}"
        return _text(value)
    return ",".join([method] + [f"{key}={text(value)}" for key, value in point.items()])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _method_points(sweep: SweepSection) -> list[tuple[str, dict[str, Any]]]:
    """(method, point) pairs: each method over the grid, then the extra points. A grid key ``method:key``
    (e.g. ``l1:zebra.lam``) varies only that method; a method's own settings win over the grid's, and
    points that collapse to the same settings (the block-size axis for ``l1``, a density axis for a method
    without Zebra) are run once."""
    pairs = []
    for method in sweep.methods:
        axes = {key.split(":", 1)[-1]: values for key, values in sweep.grid.items()
                if ":" not in key or key.split(":", 1)[0] == method}
        pairs += [(method, point) for point in grid_points(axes)]
    for extra in sweep.points:
        if not isinstance(extra, dict) or extra.get("method") not in sweep_methods():
            raise ConfigError(f"sweep.points entry {extra!r} is invalid: give a mapping with a method "
                              f"({', '.join(sweep_methods())}) and settings, e.g. {{method: zebra, zebra.lam: 0.1}}")
        pairs.append((extra["method"], {key: value for key, value in extra.items() if key != "method"}))
    unique = []
    for method, point in pairs:
        kept = (method, {key: value for key, value in point.items()
                         if key not in METHODS[method].settings and _applies(method, key)})
        if kept not in unique:
            unique.append(kept)
    return unique


# Settings of the zebra section that only Zebra's training reads; without it the section sets what is measured.
ZEBRA_TRAINING = frozenset(f.name for f in dataclasses.fields(ZebraSection)) - {
    f.name for f in dataclasses.fields(ZebraConfig)}


def _applies(method: str, key: str) -> bool:
    """Whether a grid key can change what ``method`` trains: Zebra's training settings do nothing to a method
    without Zebra, Network Slimming's to a method that does not start from the pruned model."""
    section, _, name = key.partition(".")
    if section == "zebra":
        return METHODS[method].zebra_masks or name not in ZEBRA_TRAINING
    return section != "slim" or METHODS[method].start == "pruned"


def _stage_config(values: dict[str, Any], changes: dict[str, Any]) -> RunConfig:
    """The RunConfig of one stage: ``values`` with ``changes`` and without the sweep section."""
    for key, value in changes.items():
        values = with_value(values, key, value)
    try:
        return from_dict({**values, "sweep": SweepSection().__dict__})
    except ConfigError as error:
        raise ConfigError(f"sweep point {changes}: {error}") from error


def _finished(folder: Path, config: RunConfig, baseline: bool = False) -> TrainResult | None:
    """The result of a stage finished with ``config``'s result-relevant settings (model not loaded), else None (so it
    is trained); a folder trained with other such settings is refused, naming them (``baseline``: the dense
    baseline, which reads neither the Zebra nor the fine-tune settings)."""
    report, checkpoint = folder / REPORT, folder / CHECKPOINT
    if not (report.is_file() and checkpoint.is_file()):
        return None
    payload = load_checkpoint(checkpoint)
    device = resolve_device(config.device)  # a run saves `auto` precision and layout as it resolved them
    as_run = dataclasses.replace(config, train=resolved(config.train, device),
                                 finetune=resolved(config.finetune, device))
    differ = stage_differences(payload.config, as_run, payload.masked, baseline)
    if differ:
        raise ConfigError(f"{folder} was trained with other settings: {'; '.join(differ)}; use a new --run-dir for a "
                          "changed sweep")
    if payload.optim is None or payload.epoch < payload.optim["epochs"]:
        return None
    row = read_result(report).rows[0]
    timing = folder / "seconds.json"  # where earlier versions kept a stage's time
    seconds = row.seconds if row.seconds is not None else (
        json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0)
    assert row.traffic is not None  # a stage's result always holds its traffic
    return TrainResult(None, row.traffic, payload.metrics, folder, seconds)


def _stage(config: RunConfig, folder: Path, progress: bool, **kwargs: Any) -> TrainResult:
    """A training stage, trained only when not finished already."""
    return _finished(folder, config) or train(config, folder, resume=True, progress=progress, **kwargs)


def _announced(title: str, folder: Path, config: RunConfig, baseline: bool = False) -> TrainResult | None:
    """The stage in ``folder`` if finished with ``config``'s settings, else None; announced as ``title``, and as
    skipped when finished."""
    done = _finished(folder, config, baseline)
    print(f"{title}: skipped (finished)" if done else title, flush=True)
    return done


def _row(name: str, method: str, point: dict[str, Any], stage: TrainResult, baseline: TrafficReport,
         seconds: float) -> ModelRow:
    return dataclasses.replace(stage_row(method, stage, baseline, settings=point), label=name, seconds=seconds)


def run_sweep(config: RunConfig, run_dir: str | Path, progress: bool = True) -> RunResult:
    """Train the baseline once, then every (method, grid point) not finished yet; rewrite ``sweep.json`` and
    ``sweep.csv`` after each. Rerunning the same command continues where it stopped."""
    run_dir = Path(run_dir)
    plan = _plan(config)  # every point validated before any training
    started = time.perf_counter()
    values = config.to_dict()
    base_config = _stage_config(values, {})
    dense = run_dir / METHODS[BASELINE].stage
    title = f"[baseline] {counted(base_config.train.epochs, 'epoch')} -> {dense}"
    # a baseline of other settings is refused before any write
    finished = _announced(title, dense, base_config, baseline=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    baseline = finished or _stage(base_config, dense, progress, optim=base_config.train,
                                  masked=METHODS[BASELINE].zebra_masks)
    rows = [_row(BASELINE, BASELINE, {}, baseline, baseline.report, baseline.seconds)]
    teacher = None
    for index, (method, point, stage_config) in enumerate(plan, 1):
        name = point_name(method, point)
        folder = run_dir / "points" / name
        done = _announced(f"[{index}/{len(plan)}] {name}", folder, stage_config)
        init: Path | None = dense / CHECKPOINT
        start, optim, extra = METHODS[method].start, stage_config.finetune, 0.0
        if start == "pruned":
            slim_settings = {key: value for key, value in point.items() if key.startswith("slim.")}
            init, extra = _pruned(values, slim_settings, run_dir, progress)
        elif start == "scratch":
            optim, init = stage_config.train, None
        if stage_config.distill.weight and teacher is None:
            teacher = load_trained(dense / CHECKPOINT)[0]  # once, for every point that distils
        extensions = [*method_extensions(method, stage_config), *distillation(stage_config, teacher)]
        trained = done or _stage(stage_config, folder, progress, optim=optim, masked=METHODS[method].zebra_masks,
                                 init=init, extensions=extensions)
        rows.append(_row(point_label(method, point), method, point, trained, baseline.report, trained.seconds + extra))
        _write(run_dir, config, rows, started)
    return _write(run_dir, config, rows, started)


def _plan(config: RunConfig) -> list[tuple[str, dict[str, Any], RunConfig]]:
    """(method, point, the point's config) of every point of the sweep, each config validated."""
    unknown = sorted(set(config.sweep.methods) - set(sweep_methods()))
    if unknown or not (config.sweep.methods or config.sweep.points):
        raise ConfigError(f"sweep.methods={config.sweep.methods!r} is invalid: use some of "
                          f"{', '.join(sweep_methods())} (or none, with sweep.points)")
    scopes = {key.split(":", 1)[0] for key in config.sweep.grid if ":" in key}
    if scopes - set(config.sweep.methods):
        raise ConfigError(f"sweep.grid names methods {sorted(scopes - set(config.sweep.methods))} that sweep.methods "
                          f"does not run ({config.sweep.methods})")
    values = config.to_dict()
    return [(method, point, _stage_config(values, {**point, **METHODS[method].settings}))
            for method, point in _method_points(config.sweep)]


def _pruned(values: dict[str, Any], slim_settings: dict[str, Any], run_dir: Path,
            progress: bool) -> tuple[Path, float]:
    """The pruned checkpoint for a point's ``slim.*`` settings. Its sparsity-trained model depends on ``slim.s``
    alone, so it is trained once and shared by every point with that ``s``, whatever ratio each prunes."""
    sparse_config = _stage_config(values, {k: v for k, v in slim_settings.items() if k == "slim.s"})
    pruning = _stage_config(values, slim_settings).slim
    folder = run_dir / f"sparse-s{sparse_config.slim.s:g}"
    sparse = _stage(sparse_config, folder, progress, optim=sparse_config.train,
                    masked=METHODS[SPARSE_STAGE].zebra_masks, extensions=method_extensions(SPARSE_STAGE, sparse_config))
    excluded = f"-x{hashlib.sha1(json.dumps(pruning.exclude).encode()).hexdigest()[:8]}" if pruning.exclude else ""
    pruned = folder / f"pruned-r{pruning.ratio:g}-m{pruning.min_channels}{excluded}.pt"
    if not pruned.is_file():
        prune_checkpoint(folder / CHECKPOINT, pruned, [f"slim.{key}={json.dumps(getattr(pruning, key))}"
                                                       for key in ("ratio", "min_channels", "exclude")])
    return pruned, sparse.seconds


def _write(run_dir: Path, config: RunConfig, rows: list[ModelRow], started: float) -> RunResult:
    result = RunResult("sweep", run_info("zebra sweep", config, started), config.to_dict(), BASELINE, tuple(rows))
    write_result(run_dir / SWEEP, result)
    keys = sorted({key for row in rows for key in row.settings})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["point", "method", *keys, "top1", "delta_top1", *(f"reduction_{f}" for f in FORMATS), "seconds"])
    for row in rows:
        writer.writerow([row.label, row.method, *(_text(row.settings[k]) if k in row.settings else "" for k in keys),
                         f"{row.top1:.4f}", f"{row.delta_top1:+.4f}",
                         *(f"{row.reduction[f]:.4f}" for f in FORMATS), f"{row.seconds:.1f}"])
    atomic_write_text(run_dir / "sweep.csv", out.getvalue())
    return result
