"""``zebra calibrate``: Zebra on a trained model without training — per-layer thresholds searched on training
images for the largest reduction whose top-1 drop, checked on held-out training images with a margin, stays
within a budget; then measured on the test split."""

from __future__ import annotations

import dataclasses
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .._defaults import CALIBRATION_IMAGES, HOLDOUT_IMAGES
from .._numbers import counted
from ..analysis import allocation
from ..config import RunConfig
from ..core import BlockSize, validate_block_size
from ..errors import ZebraError
from ..results import BASELINE, CALIBRATED, CHECKPOINT, METHODS, ModelRow, RunResult, model_row
from ..results.tables import allocation_markdown, points_change, rows_markdown
from ..training.building import build_data, evaluate
from ..training.checkpoint import Checkpoint, save_checkpoint
from ..training.opening import open_checkpoint
from .arguments import check_calibration
from .run import publish, run_info


@dataclass(frozen=True)
class SearchPlan:
    """How ``zebra calibrate`` measures: the settings of each layer's curve, and the profile rounds (each after the
    first measured with the other layers at the largest budget's allocation of the rounds before)."""

    grid: allocation.Grid = allocation.Grid()
    rounds: int = 1


def search_plan(block_sizes: list[BlockSize] | None = None, densities: list[float] | None = None,
                rounds: int = 1) -> SearchPlan:
    """The plan from ``--block-sizes``, ``--densities`` (None: the defaults) and ``--rounds``: a bad value is
    refused in one line naming the option."""
    sizes = tuple(validate_block_size(size, "--block-sizes") for size in block_sizes or ())
    fractions = tuple(allocation.validate_density(d, "--densities") for d in densities or allocation.DENSITIES)
    allocation.validate_rounds(rounds, "--rounds")
    return SearchPlan(allocation.Grid(fractions, sizes), rounds)


def calibrate_checkpoint(checkpoint: str | Path, out: str | Path, budgets: list[float] | tuple[float, ...] = (1.0,),
                         images: int = CALIBRATION_IMAGES, overrides: list[str] | tuple[str, ...] = (),
                         progress: bool = True, holdout: int = HOLDOUT_IMAGES,
                         plan: SearchPlan = SearchPlan()) -> RunResult:
    """For each top-1 budget (points), search per-layer settings among ``plan.grid``'s (kept-block densities,
    and block sizes where it names some: else each layer keeps its own) on ``images`` training images, over
    ``plan.rounds`` profiles, checked on ``holdout`` other training images, and write ``out/budget-<b>/last.pt``
    (a prepared checkpoint ``zebra eval`` and ``--init`` read) beside ``out/report.json`` and ``report.md`` (the
    model unmasked, then one row per budget, on the test split, with the held-out check beside it)."""
    check_calibration(budgets, images, holdout, out)
    started, out = time.perf_counter(), Path(out)
    calibrated = METHODS[CALIBRATED]
    opened = open_checkpoint(checkpoint, overrides, masked=calibrated.zebra_masks)  # the weights, thresholds 0
    model, config, device, payload = opened.model, opened.config, opened.device, opened.payload
    unaugmented = dataclasses.replace(config, data=dataclasses.replace(config.data, augment=False))
    train_set, test_set, _ = build_data(unaugmented)
    if images + holdout > len(train_set):
        raise ZebraError(f"--images {images} and --holdout {holdout} need {images + holdout} training images; the "
                         f"data has {len(train_set)}: lower them")
    _stage(progress, f"the unmasked model on the test split ({len(test_set)} images)")
    dense = evaluate(model, test_set, config, device, progress)  # thresholds 0: exactly the unmasked model
    calibration, held_out = _training_images(train_set, (images, holdout), config.seed)
    renormed = _renormed_top1(model, calibration[0].to(device), test_set, config, device, progress)
    settings = len(plan.grid.densities) * max(1, len(plan.grid.block_sizes))
    _stage(progress, f"each layer's sensitivity, {settings} settings, on {images} training images ({plan.rounds} "
                     f"round{'s' if plan.rounds > 1 else ''})")
    profiles = allocation.refine(model, allocation.profile(
        model, [calibration], plan.grid, bits=config.bits, held_out=[held_out], quoted_images=dense.images,
        progress=progress), max(budgets), plan.rounds)
    rows = [model_row(METHODS[BASELINE].title, BASELINE, dense, dense, settings={} if renormed is None else {
        "batchnorm_reestimated_top1": renormed})]
    for budget in budgets:
        _stage(progress, f"budget {counted(budget, 'point')}: search on {holdout} held-out images, then the test split")
        chosen = allocation.search(model, budget_points=budget, measured=profiles)
        folder = out / f"budget-{budget:g}"
        chosen_config = _with_block_sizes(config, chosen.block_sizes, profiles[0].own_block_sizes)
        save_checkpoint(folder / CHECKPOINT, Checkpoint(model.state_dict(), chosen_config.to_dict(), payload.spec,
                                                        calibrated.zebra_masks, payload.structure,
                                                        derived_from=str(checkpoint)))
        rows.append(model_row(f"calibrated, budget {counted(budget, 'point')}", calibrated.name, evaluate(
            model, test_set, config, device, progress), dense, folder=folder, settings={
            "budget_points": budget, "images": images, "held_out_images": chosen.check_images,
            "held_out_top1": chosen.top1, "held_out_dense_top1": chosen.dense_top1,
            "margin_points": chosen.margin_points, "round": chosen.round, "densities": chosen.densities,
            "block_sizes": chosen.block_sizes, "thresholds": chosen.thresholds}))
    command = command_line(checkpoint, out, budgets, images, holdout, plan, overrides)
    result = RunResult("calibrate", run_info(command, config, started), config.to_dict(), rows[0].label, tuple(rows))
    out.mkdir(parents=True, exist_ok=True)
    return publish(out, result, _markdown(result, checkpoint, images))


def _stage(progress: bool, text: str) -> None:
    """One line per stage where no progress bar shows it (output to a log file or a pipe, or ``--quiet``)."""
    if not progress:
        print(f"calibrate: {text}", flush=True)


def _renormed_top1(model: torch.nn.Module, inputs: torch.Tensor, test_set, config: RunConfig, device: torch.device,
                   progress: bool) -> float | None:
    """The unmasked model's test top-1 with its BatchNorm statistics re-estimated on ``inputs`` (the calibration
    images), as every calibrated model's are: the like-with-like reference for their top-1; None without
    BatchNorm. The trained statistics are restored after."""
    norms = allocation.batch_norms(model)
    if not norms:
        return None
    _stage(progress, "the unmasked model with its BatchNorm statistics re-estimated, on the test split")
    trained = [{key: value.clone() for key, value in norm.state_dict().items()} for norm in norms]
    allocation.reestimate_batchnorm(model, inputs)
    try:
        return evaluate(model, test_set, config, device, progress).accuracy
    finally:
        for norm, state in zip(norms, trained):
            norm.load_state_dict(state)


def _with_block_sizes(config: RunConfig, chosen: dict[str, BlockSize], own: dict[str, BlockSize]) -> RunConfig:
    """``config`` with the sites whose chosen block size is not their own named first in ``zebra.block_size``
    (the first matching pattern wins), so a model built from it has the searched layers."""
    changed = {site: size for site, size in chosen.items() if size != own[site]}
    if not changed:
        return config
    current = config.zebra.block_size
    mapping = {**changed, **(dict(current) if isinstance(current, dict) else {"*": current})}
    return dataclasses.replace(config, zebra=dataclasses.replace(config.zebra, block_size=mapping))


def _training_images(train_set, counts: tuple[int, ...], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint sets of ``counts`` training images picked at random (fixed by ``seed``), without augmentation."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed)).tolist()
    sets, start = [], 0
    for count in counts:
        picked = order[start:start + count]
        sets.append((torch.stack([train_set[i][0] for i in picked]),
                     torch.tensor([int(train_set[i][1]) for i in picked])))
        start += count
    return sets


def command_line(checkpoint: str | Path, out: Path, budgets, images: int = CALIBRATION_IMAGES,
                 holdout: int = HOLDOUT_IMAGES, plan: SearchPlan = SearchPlan(), overrides=()) -> str:
    """The ``zebra calibrate`` command line that makes this result."""
    grid = plan.grid
    words = ["zebra", "calibrate", str(checkpoint), "--out", str(out), "--budget", *(f"{b:g}" for b in budgets),
             "--images", str(images), "--holdout", str(holdout)]
    words += ["--block-sizes", *map(str, grid.block_sizes)] if grid.block_sizes else []
    words += ["--densities", *(f"{d:g}" for d in grid.densities)] if grid.densities != allocation.DENSITIES else []
    words += ["--rounds", str(plan.rounds)] if plan.rounds != 1 else []
    return shlex.join(words + [word for override in overrides for word in ("--set", override)])


def budget_lines(rows: tuple[ModelRow, ...]) -> tuple[list[str], list[str]]:
    """The held-out check beside the test split and the Zebra+ZVC reduction, one row per budget (of a calibrate
    result's rows), with the profile round that found it where there were several, and a warning per budget the
    test breaks."""
    rounds = any(row.settings.get("round", 1) > 1 for row in rows[1:])
    lines = ["| budget (points) | held-out top-1 % | held-out Δ top-1 (points) | margin (points) | test top-1 % | "
             "test Δ top-1 (points) | test within budget | Zebra+ZVC reduction % |" + (" round |" if rounds else ""),
             "|" + "---|" * (8 + rounds)]
    warnings = []
    for row in rows[1:]:
        s = row.settings
        assert row.top1 is not None and row.delta_top1 is not None  # a calibrated row is always measured
        held_out, test = (s["held_out_top1"] - s["held_out_dense_top1"]) * 100, row.delta_top1 * 100
        within = -test <= s["budget_points"] + 1e-9
        lines.append(f"| {s['budget_points']:g} | {s['held_out_top1'] * 100:.2f} | {points_change(held_out)} | "
                     f"{s['margin_points']:.2f} | {row.top1 * 100:.2f} | {points_change(test)} | "
                     f"{'yes' if within else 'no'} | {row.reduction['zebra_zvc'] * 100:.2f} |"
                     + (f" {s.get('round', 1)} |" if rounds else ""))
        if not within:
            warnings.append(f"**Warning**: budget {s['budget_points']:g}: the test split loses {-test:.2f} points, "
                            "more than the budget (the held-out check and its margin did not foresee it).")
    return lines, warnings


def _batchnorm_lines(dense: ModelRow) -> list[str]:
    """What the calibrated rows' re-estimated BatchNorm statistics do to their top-1: the unmasked model with its
    statistics re-estimated the same way, beside the dense row (which keeps the trained ones)."""
    renormed = dense.settings.get("batchnorm_reestimated_top1")
    if renormed is None or dense.top1 is None:
        return []
    return [f"BatchNorm statistics: the calibrated rows' are re-estimated on the calibration images, the dense "
            f"baseline's are the trained ones. The unmasked model with its statistics re-estimated the same way scores "
            f"{renormed * 100:.2f} % ({points_change((renormed - dense.top1) * 100)} points against the dense row): "
            "compare the calibrated rows with it too; a large gap means the trained statistics are off (e.g. an "
            "under-trained model), not that the masks help.", ""]


def _markdown(result: RunResult, checkpoint: str | Path, images: int) -> str:
    checks, warnings = budget_lines(result.rows)
    held_out = result.rows[1].settings["held_out_images"] if len(result.rows) > 1 else 0
    test_images = result.rows[0].traffic.images if result.rows[0].traffic else 0
    return "\n".join([
        "# torchzebra calibrate: Zebra without training", "", result.info.markdown(), "", *warnings,
        *([""] if warnings else []),
        f"Model of `{checkpoint}`; per-layer thresholds searched on {images} training images (no augmentation) for "
        "the largest Zebra+ZVC reduction whose top-1 drop on "
        f"{held_out} other training images, plus a one-sided {allocation.CONFIDENCE:.0%} margin for the noise of "
        "those images and of the test split, stays within each budget (BatchNorm statistics re-estimated on the "
        "masked model, no training); then measured on the test split "
        f"({test_images} images). Reductions are against the model's dense bytes.",
        "", rows_markdown(result.rows), "", *_batchnorm_lines(result.rows[0]),
        "## The budget: held-out training images and the test split", "", *checks,
        "", "## Kept blocks per layer", "", allocation_markdown(result.rows), "",
    ])
