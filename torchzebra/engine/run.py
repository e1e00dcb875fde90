"""The main job: the dense baseline, then the Zebra model fine-tuned from it, and their side-by-side report."""

from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text
from ..reports.compare import comparison_markdown, comparison_rows
from .config import RunConfig, save_config
from .trainer import CHECKPOINT, train


def machine(device: torch.device | str) -> dict[str, Any]:
    """Where a result was measured: platform, CPU threads, torch version and device (for every summary)."""
    return {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device)}


def new_run_dir(root: str | Path = "runs") -> Path:
    """``root/<UTC timestamp>``, made unique if several runs start in the same second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    suffix = 1
    while path.exists():
        path = Path(root) / f"{stamp}-{suffix}"
        suffix += 1
    return path


def run_experiment(config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the baseline (``config.train``, Zebra off), fine-tune it with Zebra (``config.finetune``),
    then write ``report.md`` and ``report.json`` in ``run_dir``. Returns the JSON-ready summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    print(f"[1/2] dense baseline: {config.train.epochs} epochs -> {run_dir / 'baseline'}", flush=True)
    baseline = train(config, run_dir / "baseline", stage=config.train, zebra=False, resume=resume, progress=progress)
    print(f"[2/2] Zebra fine-tune from the baseline: {config.finetune.epochs} epochs -> {run_dir / 'zebra'}", flush=True)
    zebra = train(config, run_dir / "zebra", stage=config.finetune, zebra=True,
                  init=run_dir / "baseline" / CHECKPOINT, resume=resume, progress=progress)
    seconds = time.perf_counter() - started
    summary = {
        "command": "zebra run",
        "config": config.to_dict(),
        "machine": machine(next(zebra.model.parameters()).device),
        "wall_seconds": seconds,
        "rows": comparison_rows({"dense baseline": baseline.report, "Zebra": zebra.report}, "dense baseline"),
        "baseline": baseline.report.to_dict(),
        "zebra": zebra.report.to_dict(),
    }
    markdown = comparison_markdown(summary, baseline.report, zebra.report)
    atomic_write_text(run_dir / "report.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "report.md", markdown)
    print(markdown, flush=True)
    return summary
