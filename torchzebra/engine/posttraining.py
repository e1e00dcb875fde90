"""``zebra calibrate``: Zebra on a trained model without training — per-layer thresholds searched on a few
hundred training images for the largest reduction within a top-1 budget, then measured on the test split."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .. import allocation
from .._io import atomic_write_text
from ..data import DataSpec
from ..results import CHECKPOINT, METHODS, RunResult, model_row
from ..results.tables import allocation_markdown, rows_markdown
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .run import publish, run_info
from .trainer import build_data, build_prepared_model, checkpoint_config, evaluate, resolve_device


def calibrate_checkpoint(checkpoint: str | Path, out: str | Path, budgets: list[float] | tuple[float, ...] = (1.0,),
                         images: int = 512, overrides: list[str] | tuple[str, ...] = (),
                         progress: bool = True) -> RunResult:
    """For each top-1 budget (points), search thresholds on ``images`` training images of the checkpoint's data
    and write ``out/budget-<b>/last.pt`` (a prepared checkpoint ``zebra eval`` and ``--init`` read) beside
    ``out/report.json`` and ``report.md`` (rows: the model unmasked, then one per budget, on the test split)."""
    started, out = time.perf_counter(), Path(out)
    payload = load_checkpoint(checkpoint)
    config = checkpoint_config(payload, overrides)
    device = resolve_device(config.device)
    model = build_prepared_model(config, DataSpec(**payload["spec"]), True, payload.get("structure")).to(device)
    load_weights(model, payload["model"], f"checkpoint {checkpoint}")
    train_set, test_set, _ = build_data(dataclasses.replace(config, data=dataclasses.replace(config.data, augment=False)))
    dense = evaluate(model, test_set, config, device, progress)  # thresholds 0: exactly the unmasked model
    measured = allocation.profile(model, [_calibration_batch(train_set, images, config.seed)], bits=config.bits)
    rows = [model_row(METHODS["dense"].title, "dense", dense, dense)]
    for budget in budgets:
        chosen = allocation.search(model, budget_points=budget, measured=measured)
        folder = out / f"budget-{budget:g}"
        save_checkpoint(folder / CHECKPOINT, {"config": config.to_dict(), "spec": payload["spec"], "zebra": True,
                                              "model": model.state_dict(), "structure": payload.get("structure"),
                                              "calibrated_from": str(checkpoint)})
        rows.append(model_row(f"calibrated, budget {budget:g} point", "zebra-calibrated", evaluate(
            model, test_set, config, device, progress), dense, folder=folder, settings={
            "budget_points": budget, "images": images, "calibration_top1": chosen.top1,
            "densities": chosen.densities, "thresholds": chosen.thresholds}))
    result = RunResult("calibrate", run_info(f"zebra calibrate {checkpoint}", config, started), config.to_dict(),
                       rows[0].label, tuple(rows))
    out.mkdir(parents=True, exist_ok=True)
    return publish(out, result, _markdown(result, checkpoint, images))


def _calibration_batch(train_set, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` training images picked at random (fixed by ``seed``), without augmentation."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    return torch.stack([train_set[i][0] for i in order]), torch.tensor([int(train_set[i][1]) for i in order])


def _markdown(result: RunResult, checkpoint: str | Path, images: int) -> str:
    return "\n".join([
        "# torchzebra calibrate: Zebra without training", "", result.info.markdown(), "",
        f"Model of `{checkpoint}`; per-layer thresholds searched on {images} training images (no augmentation) for "
        "the largest Zebra+ZVC reduction whose top-1 on those images stays within each budget, then measured on "
        f"the test split ({result.rows[0].traffic.images} images). Reductions are against the model's dense bytes.",
        "", rows_markdown(result.rows), "", "## Kept blocks per layer", "", allocation_markdown(result.rows), "",
    ])
