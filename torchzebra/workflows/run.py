"""The main job: the dense baseline, then the Zebra model fine-tuned from it, and their side-by-side report."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..analysis.measure import TrafficReport
from ..config.run import RunConfig, save_config
from ..results import (
    BASELINE,
    CHECKPOINT,
    METHODS,
    REPORT,
    Machine,
    ModelRow,
    RunInfo,
    RunResult,
    method_extensions,
    model_row,
    write_result,
)
from ..results.tables import run_markdown
from ..training.building import resolve_device
from ..training.extensions import distillation
from ..training.precision import training_modes
from ..training.trainer import TrainResult, train
from .hardware import run_estimate


def new_run_dir(root: str | Path = "runs") -> Path:
    """``root/<UTC timestamp>``, made unique if several runs start in the same second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    suffix = 1
    while path.exists():
        path = Path(root) / f"{stamp}-{suffix}"
        suffix += 1
    return path


def stage_row(method: str, stage: TrainResult, reference: TrafficReport, **extra: Any) -> ModelRow:
    """The result row of a trained stage, labelled with its method's title."""
    return model_row(METHODS[method].title, method, stage.report, reference, seconds=stage.seconds,
                     folder=stage.run_dir, **extra)


def publish(run_dir: Path, result: RunResult, markdown: str) -> RunResult:
    """Write ``report.json`` and ``report.md`` of a run folder and print the Markdown."""
    write_result(run_dir / REPORT, result)
    atomic_write_text(run_dir / "report.md", markdown)
    print(markdown, flush=True)
    return result


def run_info(command: str, config: RunConfig, started: float) -> RunInfo:
    """The command/machine/wall-time line of a run that started at ``started`` (``time.perf_counter``)."""
    device = resolve_device(config.device)
    return RunInfo(command, Machine.here(device, training_modes(config, device)), time.perf_counter() - started)


def run_experiment(config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train the dense baseline (``config.train``), then the Zebra model of ``config.run.method`` (fine-tuned from
    the baseline, or trained from scratch with the baseline's recipe; distilled from it when ``distill.weight``
    is set), then write ``report.md`` and ``report.json`` in ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    dense, method = METHODS[BASELINE], METHODS[config.run.method]
    print(f"[1/2] dense baseline: {config.train.epochs} epochs -> {run_dir / dense.stage}", flush=True)
    baseline = train(config, run_dir / dense.stage, optim=config.train, masked=dense.zebra_masks, resume=resume,
                     progress=progress)
    scratch = method.start == "scratch"
    optim = config.train if scratch else config.finetune
    print(f"[2/2] {method.description}: {optim.epochs} epochs -> {run_dir / method.stage}", flush=True)
    assert baseline.model is not None  # trained just now
    extensions = [*method_extensions(method.name, config), *distillation(config, baseline.model)]
    zebra = train(config, run_dir / method.stage, optim=optim, masked=method.zebra_masks,
                  init=None if scratch else run_dir / dense.stage / CHECKPOINT, resume=resume, extensions=extensions,
                  progress=progress)
    rows = (stage_row(BASELINE, baseline, baseline.report), stage_row(method.name, zebra, baseline.report))
    result = RunResult("run", run_info("zebra run", config, started), config.to_dict(), rows[0].label, rows)
    publish(run_dir, result, run_markdown(result))
    run_estimate(run_dir, (run_dir / method.stage / CHECKPOINT, zebra.report),  # estimate.json: the presets' cycles
                 (run_dir / dense.stage / CHECKPOINT, baseline.report))
    return result
