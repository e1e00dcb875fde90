"""The CPU reference experiment end to end, then docs/RESULTS.md, docs/results.json and (when that is the JSON
written) README.md's results box generated from its JSON.

1. The main job (`make run`'s recipe: the `quick` preset) for every seed of `--seeds`, each in `RUN_DIR/main-seed<N>`.
2. The no-training route on seed 0's dense baseline: `zebra calibrate` in `RUN_DIR/calibrate`.
3. The main recipe on more networks (`--architectures`), one seed each, in `RUN_DIR/arch-<name>`.
4. On seed 0, as one resumable `zebra sweep` sharing the main job's baseline in `RUN_DIR/levers`: the control (the
   dense baseline retrained as long, no masks) and Network Slimming alone at four pruning ratios against
   Slimming+Zebra with the same training budget (the paper's claim of a gain from combining them).
5. The main job with cached distillation targets for every seed of `--seeds`, each in `RUN_DIR/cached-seed<N>`
   sharing the main job's baseline of its seed.

Every step is resumable (finished stages are not rerun); the documents are rewritten from whatever is there.

    .venv/bin/python benchmarks/reference.py [--run-dir runs/reference] [--seeds 0 1 2]
                                             [--steps main calibrate architectures levers targets]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from readme_box import README, RESULTS, with_box

from torchzebra._io import atomic_write_text
from torchzebra._numbers import counted
from torchzebra.analysis import allocation
from torchzebra.config import RunConfig, load_config
from torchzebra.config.run import from_dict
from torchzebra.reports.summary import Point, best_within, budget_markdown, load_points, points_markdown
from torchzebra.results import CHECKPOINT, METHODS, REPORT, RunResult, read_result
from torchzebra.results.tables import DELTA_TOP1_TITLE, points_change
from torchzebra.training import keep_freed_memory
from torchzebra.workflows.no_training import SearchPlan, budget_lines, calibrate_checkpoint, command_line
from torchzebra.workflows.run import run_experiment
from torchzebra.workflows.sweep import run_sweep

TARGET, BUDGET = 0.75, 1.0  # the main job's target: 75 % less activation bandwidth within 1 point, every seed
CALIBRATION_BUDGETS = [0.25, 0.5, 1.0]
PAPER_SLIMMING_GAIN = 2.0  # the paper's top-1 gain from Zebra on top of Network Slimming, in points (about)
CALIBRATION_BLOCK_SIZES = [1, 2, 4]  # each layer's block size searched with its density
CALIBRATION_IMAGES = 1024
# zebra calibrate's default held-out images, to fit the 2-core machine: every other training image (58,976) gives a
# tighter margin, and so a little more within each budget, at about six times the time of each check
CALIBRATION_HOLDOUT = 10000
# A block's largest value as its score (a block with one strong activation is kept whole): on the trained
# baseline it keeps more traffic off within each budget than the mean, the trained models' score (compare with
# `--set zebra.score=mean`).
CALIBRATION_OVERRIDES = ["zebra.score=max"]
# A second profile with the other layers at the largest budget's first allocation: layers masked together cost
# more than alone, unevenly, and the first curves put the bytes where they do not hold; each budget keeps the
# round that saves the most (RESULTS.md's round column).
CALIBRATION_ROUNDS = 2
CONTROL = "dense-retrained"  # no masks: what the extra epochs alone give, never a candidate for the best
# On seed 0, sharing the main job's baseline: the control (the dense baseline retrained as long as the main job's
# Zebra model, no masks); Slimming+Zebra (the main job's Zebra recipe on the Slimming-pruned model) and Slimming
# alone at four ratios around its traffic cut, each fine-tuned as long as the other (2 epochs, to fit the 2-core
# machine) from the same sparsity-trained model. Slimming alone collapses past ratio 0.8 within 2 epochs (0.6 and
# 0.8 cut 55 % and 68 %, 0.9 and 0.95 lose over 50 points) where Slimming+Zebra cuts 83 %; so a second
# Slimming+Zebra point keeps half of the blocks everywhere, for a cut between those two sane ratios (matched).
# The stronger recipe: fewer kept blocks (11 % / 9 % of the early maps', 25 % / 20 % of layer3/4's) retrained
# twice as long as the main job, with its control retrained as long.
STRONGER = {"finetune.epochs": 8}
LEVERS = [
    {"method": CONTROL, "finetune.epochs": 4},
    {"method": CONTROL, **STRONGER},
    {"method": "zebra", "zebra.density": {"layer3.*": 0.25, "layer4.*": 0.25, "*": 0.11}, **STRONGER},
    {"method": "zebra", "zebra.density": {"layer3.*": 0.2, "layer4.*": 0.2, "*": 0.09}, **STRONGER},
    {"method": "slim-zebra", "finetune.epochs": 2},
    {"method": "slim-zebra", "finetune.epochs": 2, "zebra.density": 0.5},
    *({"method": "slim", "slim.ratio": ratio, "finetune.epochs": 2} for ratio in (0.6, 0.8, 0.9, 0.95)),
]
# The main recipe on more networks (one seed): a VGG-style network with BatchNorm, a depthwise-separable network
# with ReLU6, and a deeper, narrower residual network. No per-layer tuning: one density for every map; 2 epochs
# for the baseline and 2 for Zebra, to fit the 2-core machine.
SHORT = {"train.epochs": 2, "finetune.epochs": 2}
ARCHITECTURES = {
    "vgg11-bn": {"model.name": "vgg11", "model.options": {"width": 16}, "zebra.density": 0.3, **SHORT},
    # MobileNet-V2 at 32x32: the 16x16 and 8x8 maps of features.0-4 carry about two thirds of the traffic; from
    # features.5 on the maps are 4x4 to 1x1, where a 2x2 block is a quarter of a channel or all of it, so those
    # keep more (one density of 0.45 everywhere lost 2.55 points after its 2 epochs). Its fine-tune peaks at a
    # learning rate of 0.02: at the main job's 0.1 its training accuracy fell from 85 % to 66 % in the first epoch
    # and it ended 8.12 points below its baseline
    "mobilenet_v2": {"model.name": "torchvision:mobilenet_v2", "model.options": {},
                     "zebra.density": {"features.[0-4].*": 0.5, "*": 0.8}, "finetune.lr": 0.02, **SHORT},
    # 8 to 32 channels: 30 % kept blocks lost 1.37 points after its 2 epochs
    "resnet56": {"model.name": "resnet56", "model.options": {"width": 8}, "zebra.density": 0.4, **SHORT},
}
# The main job again with the teacher's targets cached (`distill.targets=cached`: its logits for each training image,
# un-augmented, computed once before the fine-tune, so no teacher forward in the steps), every seed, each sharing
# the main job's baseline of its seed: what the cheaper distilled step costs in accuracy and traffic.
CACHED_TARGETS = ["distill.targets=cached"]
STEPS = ("main", "calibrate", "architectures", "levers", "targets")


def experiment(folder: Path, config: RunConfig) -> RunResult:
    """The two-model run of ``config`` in ``folder``: read when finished, else run (resuming finished stages)."""
    done = folder / REPORT
    # a finished run is read, not resumed: resuming would re-time it as a few seconds of evaluation
    result = read_result(done) if done.is_file() else run_experiment(config, folder, resume=True, progress=False)
    if from_dict(result.config).to_dict() != config.to_dict():  # settings added since it ran take their defaults
        raise SystemExit(f"{folder} holds a run with other settings: use another --run-dir")
    return result


def main_job(run_dir: Path, seeds: list[int], overrides: list[str], run: bool) -> list[dict]:
    """The main job for each seed (only those already finished unless ``run``); one entry per seed (fractions)."""
    entries = []
    for seed in seeds:
        folder = run_dir / f"main-seed{seed}"
        if not run and not (folder / REPORT).is_file():
            continue
        result = experiment(folder, load_config("quick", overrides=[*overrides, f"seed={seed}"]))
        baseline, zebra = result.rows
        entries.append({"seed": seed, "method": zebra.method, "baseline_top1": baseline.top1, "zebra_top1": zebra.top1,
                        "zebra_zvc_reduction": zebra.reduction["zebra_zvc"],
                        "zvc_of_baseline": baseline.reduction["zvc"], "wall_seconds": result.info.wall_seconds,
                        "folder": str(folder)})
    return entries


def architectures(run_dir: Path, overrides: list[str], run: bool) -> list[dict]:
    """The main recipe on each of ``ARCHITECTURES`` (seed 0); only those already finished unless ``run``."""
    entries = []
    for name, settings in ARCHITECTURES.items():
        folder = run_dir / f"arch-{name}"
        if not run and not (folder / REPORT).is_file():
            continue
        config = load_config("quick", overrides=[*overrides, "seed=0",
                                                 *(f"{k}={json.dumps(v)}" for k, v in settings.items())])
        baseline, zebra = experiment(folder, config).rows
        entries.append({"model": name, "model_name": settings["model.name"], "options": settings["model.options"],
                        "density": settings["zebra.density"], "finetune_lr": config.finetune.lr,
                        "baseline_top1": baseline.top1, "zebra_top1": zebra.top1,
                        "dense_zvc_reduction": baseline.reduction["zvc"],
                        "zebra_zvc_reduction": zebra.reduction["zebra_zvc"], "folder": str(folder)})
    return entries


def share_baseline(folder: Path, run_dir: Path, seed: int) -> None:
    """``folder/baseline``, made where missing: a link to the main job's dense baseline of ``seed`` (the same
    settings), so a step that trains from it does not train it again."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "baseline").exists():
        (folder / "baseline").symlink_to((run_dir / f"main-seed{seed}" / "baseline").resolve(),
                                         target_is_directory=True)


def cached_targets(run_dir: Path, seeds: list[int], overrides: list[str], run: bool) -> list[dict]:
    """The main job with cached distillation targets for each seed, in ``RUN_DIR/cached-seed<N>`` beside the main
    job's baseline of that seed (only those already finished unless ``run``); one entry per seed (fractions)."""
    entries = []
    for seed in seeds:
        folder = run_dir / f"cached-seed{seed}"
        if not run and not (folder / REPORT).is_file():
            continue
        share_baseline(folder, run_dir, seed)
        result = experiment(folder, load_config("quick", overrides=[*overrides, f"seed={seed}", *CACHED_TARGETS]))
        baseline, zebra = result.rows
        entries.append({"seed": seed, "baseline_top1": baseline.top1, "zebra_top1": zebra.top1,
                        "zebra_zvc_reduction": zebra.reduction["zebra_zvc"], "folder": str(folder)})
    return entries


def cached_targets_markdown(main: list[dict], cached: list[dict]) -> list[str]:
    """The main job with the teacher on every batch against cached targets, seed by seed, and their means."""
    by_seed = {e["seed"]: e for e in main}
    pairs = [(by_seed[c["seed"]], c) for c in cached if c["seed"] in by_seed]
    if not pairs:
        return []
    rows = [f"| {m['seed']} | {m['baseline_top1'] * 100:.2f} | {m['zebra_top1'] * 100:.2f} | "
            f"{points_change((m['zebra_top1'] - m['baseline_top1']) * 100)} | {m['zebra_zvc_reduction'] * 100:.1f} | "
            f"{c['zebra_top1'] * 100:.2f} | {points_change((c['zebra_top1'] - c['baseline_top1']) * 100)} | "
            f"{c['zebra_zvc_reduction'] * 100:.1f} |" for m, c in pairs]
    means = [summary([m for m, _ in pairs]), summary([c for _, c in pairs])]
    verdicts = [f"{s['mean_zebra_zvc_reduction'] * 100:.1f} % at a mean drop of {s['mean_top1_drop_points']:.2f} "
                f"points (largest {s['max_top1_drop_points']:.2f})" for s in means]
    return ["## Distillation targets: the teacher on every batch or cached", "",
            "The main job's recipe with `distill.targets=cached` (offline distillation: the baseline's logits for "
            "each training image, un-augmented, computed once before the fine-tune and read in every step, so the "
            "step runs no teacher forward; docs/PERFORMANCE.md times both steps), each seed from the main job's "
            "baseline of that seed.", "",
            f"| seed | baseline top-1 % | Zebra top-1 %, teacher on every batch | {DELTA_TOP1_TITLE} | Zebra+ZVC % | "
            f"Zebra top-1 %, cached targets | {DELTA_TOP1_TITLE} | Zebra+ZVC % |",
            "|---|---|---|---|---|---|---|---|", *rows, "",
            f"Mean over {len(pairs)} seed(s): the teacher on every batch {verdicts[0]}; cached targets {verdicts[1]}.",
            ""]


def summary(entries: list[dict]) -> dict:
    """Mean and standard deviation of the main job over its seeds."""
    reductions = [e["zebra_zvc_reduction"] for e in entries]
    drops = [(e["baseline_top1"] - e["zebra_top1"]) * 100 for e in entries]
    return {"seeds": len(entries), "mean_zebra_zvc_reduction": statistics.mean(reductions),
            "std_zebra_zvc_reduction": statistics.stdev(reductions) if len(entries) > 1 else 0.0,
            "mean_top1_drop_points": statistics.mean(drops), "max_top1_drop_points": max(drops),
            "every_seed_within_budget": all(d <= BUDGET for d in drops)}


def levers(run_dir: Path, overrides: list[str]) -> None:
    """The levers as sweep points on seed 0, sharing the main job's seed-0 baseline (same settings)."""
    folder = run_dir / "levers"
    share_baseline(folder, run_dir, 0)
    config = load_config("quick", overrides=[*overrides, "seed=0", "sweep.methods=[]",
                                             f"sweep.points={json.dumps(LEVERS)}"])
    run_sweep(config, folder, progress=False)


def calibration(run_dir: Path) -> None:
    """``zebra calibrate`` on seed 0's baseline: run unless finished, and a finished one must be this one."""
    folder, checkpoint = run_dir / "calibrate", run_dir / "main-seed0" / "baseline" / CHECKPOINT
    plan = SearchPlan(allocation.Grid(block_sizes=tuple(CALIBRATION_BLOCK_SIZES)), CALIBRATION_ROUNDS)
    if not (folder / REPORT).is_file():
        calibrate_checkpoint(checkpoint, folder, CALIBRATION_BUDGETS, CALIBRATION_IMAGES, CALIBRATION_OVERRIDES,
                             progress=False, holdout=CALIBRATION_HOLDOUT, plan=plan)
    expected = command_line(checkpoint, Path(folder), CALIBRATION_BUDGETS, CALIBRATION_IMAGES, CALIBRATION_HOLDOUT,
                            plan, CALIBRATION_OVERRIDES)
    if read_result(folder / REPORT).info.command != expected:
        raise SystemExit(f"{folder} holds a calibration of other settings (not `{expected}`): move it away")


def no_training(points: list[Point]) -> dict | None:
    """The best calibrated (no-training) point within the budget on the test split."""
    within = [p for p in points if p.method == "zebra-calibrated" and p.drop <= BUDGET]
    if not within:
        return None
    p = max(within, key=lambda q: q.best_reduction)
    return {"reduction": p.best_reduction, "top1_drop_points": p.drop, "format": p.best_format, "label": p.label}


def _slimming_at(cut: float, alone: list[Point]) -> tuple[float, str]:
    """Slimming alone's top-1 at ``cut``: interpolated (linearly in the cut) between its two points around it,
    or its nearest point when none bracket it; and which of the two it is."""
    below = [p for p in alone if p.best_reduction <= cut]
    above = [p for p in alone if p.best_reduction > cut]
    if below and above:
        a, b = below[-1], above[0]
        t = (cut - a.best_reduction) / (b.best_reduction - a.best_reduction)
        return a.top1 + t * (b.top1 - a.top1), "interpolated"
    nearest = min(alone, key=lambda p: abs(p.best_reduction - cut))
    return nearest.top1, f"nearest point ({nearest.best_reduction:.3f} cut)"


def slimming_claim(points: list[Point]) -> dict | None:
    """Slimming alone against Slimming+Zebra at the same traffic cut, each trained as long, for every
    Slimming+Zebra point; the claim is the matched comparison (Slimming alone interpolated between two ratios
    around the cut) of the largest cut, else the largest cut against Slimming alone's nearest point."""
    combined = sorted((p for p in points if p.method == "slim-zebra"), key=lambda p: p.best_reduction)
    alone = sorted((p for p in points if p.method == "slim"), key=lambda p: p.best_reduction)
    if not combined or not alone:
        return None
    comparisons = []
    for target in combined:
        top1, how = _slimming_at(target.best_reduction, alone)
        comparisons.append({"traffic_reduction": target.best_reduction, "slimming_top1": top1,
                            "slim_zebra_top1": target.top1, "slimming_top1_is": how, "slim_zebra_label": target.label})
    matched = [c for c in comparisons if c["slimming_top1_is"] == "interpolated"]
    claim = (matched or comparisons)[-1]
    return {**claim, "comparisons": comparisons, "slimming_points": [
        {"label": p.label, "top1": p.top1, "reduction": p.best_reduction, "format": p.best_format} for p in alone]}


def finished_folders(run_dir: Path) -> list[Path]:
    """The seed-0 folders whose points the documents show, leaving out a step still underway."""
    folders = [run_dir / "main-seed0", run_dir / "levers", run_dir / "calibrate"]
    return [f for f in folders if (f / REPORT).is_file() or (f / "sweep.json").is_file()]


def points_of(run_dir: Path) -> list[Point]:
    return [point for folder in finished_folders(run_dir) for point in load_points(folder)]


def _best_reductions(points: list[Point]) -> dict[str, float]:
    """Each method's largest best-format reduction within the budget."""
    return {method: p.best_reduction for method, p in best_within(points, BUDGET).items()}


def best_point(points: list[Point]) -> dict | None:
    """The largest reduction within the budget over every method but the dense baseline."""
    within = [p for m, p in best_within(points, BUDGET).items() if m not in ("dense", CONTROL)]
    if not within:
        return None
    p = max(within, key=lambda q: q.best_reduction)
    return {"method": p.method, "label": p.label, "top1_drop_points": p.drop, "format": p.best_format,
            "reduction": p.best_reduction, "top1": p.top1}


def markdown(document: dict, points: list[Point], pairs: list[tuple[Point, Point]], run_dir: Path) -> str:
    s, seeds = document["main_job_summary"], document["main_job"]
    config = read_result(run_dir / "main-seed0" / REPORT).config
    reached = s["mean_zebra_zvc_reduction"] >= TARGET and s["every_seed_within_budget"]
    best = document["best"]
    rows = "\n".join(f"| {e['seed']} | {e['baseline_top1'] * 100:.2f} | {e['zebra_top1'] * 100:.2f} | "
                     f"{points_change((e['zebra_top1'] - e['baseline_top1']) * 100)} | "
                     f"{e['zvc_of_baseline'] * 100:.1f} | "
                     f"{e['zebra_zvc_reduction'] * 100:.1f} | {e['wall_seconds'] / 60:.1f} |" for e in seeds)
    return "\n".join([
        "# Results: the CPU reference experiment", "",
        f"Generated by `{document['generated_by']}` on {document['generated_at']} from the JSON results under "
        f"`{run_dir}` (also written to `docs/results.json`); do not edit by hand.", "",
        f"Machine: {machine_line(run_dir)}. A seed's figures repeat exactly on this machine and move by a "
        "few tenths of a point on another machine or in another training mode (docs/METHOD.md section 4.1).", "",
        f"Recipe of the main job (`make run`, the `quick` preset): {config['model']['name']} "
        f"{config['model']['options']} on {config['data']['name']}; dense baseline {config['train']['epochs']} epochs; "
        f"Zebra by `run.method={config['run']['method']}`, distillation weight {config['distill']['weight']:g}; block "
        f"{config['zebra']['block_size']}, {config['zebra']['penalty']} penalty, lambda {config['zebra']['lam']}, "
        f"kept blocks {config['zebra']['density']}, excluded {config['zebra']['exclude']}. 8-bit values, metadata "
        "counted, one write plus one read per consumer, 10,000 test images; reductions against the dense baseline's "
        "dense bytes.", "",
        "## The main job over seeds", "",
        f"Target: Zebra+ZVC at least {TARGET:.0%} within {BUDGET:g} point of the baseline's top-1, mean over seeds. "
        f"**{'reached' if reached else 'not reached'}**: mean {s['mean_zebra_zvc_reduction'] * 100:.1f} % "
        f"(std {s['std_zebra_zvc_reduction'] * 100:.1f}) at a mean drop of {s['mean_top1_drop_points']:.2f} points "
        f"(largest {s['max_top1_drop_points']:.2f}) over {s['seeds']} seed(s).", "",
        f"| seed | baseline top-1 % | Zebra top-1 % | {DELTA_TOP1_TITLE} | ZVC of the baseline % | Zebra+ZVC % "
        "| wall min |",
        "|---|---|---|---|---|---|---|", rows, "",
        "Wall time: each run as it went, with whatever else the machine ran beside it; `make run` on a quiet clean "
        "clone: README.md, \"Two commands\".", "",
        "## Best within the budget, every method (seed 0)", "",
        (f"Best: `{best['label']}` ({best['method']}) saves {best['reduction'] * 100:.1f} % ({best['format']}) at "
         f"{points_change(-best['top1_drop_points'])} points against the baseline." if best
         else "No method stayed within the budget."), "",
        budget_markdown(points, BUDGET), "", *controls_markdown(points, pairs, document["best_against_control"]),
        *cached_targets_markdown(seeds, document["cached_targets"]),
        *no_training_markdown(document["no_training"], run_dir), *architectures_markdown(document["architectures"]),
        *slimming_markdown(document["slimming_claim"], _best_reductions(points)),
        "## Every point", "", points_markdown(points), "",
        f"`zebra report {' '.join(str(f) for f in finished_folders(run_dir))} --out DIR` draws the Pareto fronts.",
        "",
    ])


def cpu_model() -> str:
    """The processor's model name, as Linux reports it (empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def machine_line(run_dir: Path) -> str:
    """Where the main job's seed 0 ran: the processor, threads, torch and how it trained."""
    m = read_result(run_dir / "main-seed0" / REPORT).info.machine
    return (f"{cpu_model() or m.platform}, {m.cpus} threads, torch {m.torch} on {m.device}"
            f"{f', trained in {m.training}' if m.training else ''}")


_ROUNDS = (" Each layer's cost is measured alone (round 1), then again with the other layers at budget "
           f"{max(CALIBRATION_BUDGETS):g}'s allocation of round 1 (round 2); each budget keeps the allocation of the "
           "round that saves the most.")


def no_training_markdown(best: dict | None, run_dir: Path) -> list[str]:
    """The no-training route: every budget's held-out check beside the test split, and its best point within the
    budget on the test split."""
    report = run_dir / "calibrate" / REPORT
    verdict = (f"Best within {BUDGET:g} point on the test split: {best['reduction'] * 100:.1f} % ({best['format']}) "
               f"at {points_change(-best['top1_drop_points'])} points (`{best['label']}`)." if best else
               f"No calibrated point is within {BUDGET:g} point on the test split.")
    if not report.is_file():  # the step has not run: nothing to say about it
        return []
    result = read_result(report)
    table, warnings = budget_lines(result.rows)
    held_out = result.rows[1].settings["held_out_images"] if len(result.rows) > 1 else 0
    return ["## Without training (`zebra calibrate`)", "",
            "Per-layer kept-block densities and block sizes searched on the dense baseline with no training, blocks "
            f"scored by their {result.config['zebra']['score']}: the budget is checked on {held_out} held-out training "
            "images with a one-sided 95 % margin, BatchNorm statistics re-estimated on the masked model, then "
            f"measured on the test split.{_ROUNDS if '--rounds' in result.info.command else ''} {verdict}", "",
            f"Command: `{result.info.command}`.", "",
            *table, "", *warnings, *([""] if warnings else [])]


def architectures_markdown(entries: list[dict]) -> list[str]:
    """The main recipe on more networks, one row each."""
    if not entries:
        return []
    rows = [f"| {e['model']} (`{e['model_name']}` {e['options']}) | {_densities(e['density'])} | "
            f"{e['finetune_lr']:g} | {e['baseline_top1'] * 100:.2f} | "
            f"{e['zebra_top1'] * 100:.2f} | {points_change((e['zebra_top1'] - e['baseline_top1']) * 100)} | "
            f"{e['dense_zvc_reduction'] * 100:.1f} | {e['zebra_zvc_reduction'] * 100:.1f} |" for e in entries]
    return ["## More networks (seed 0)", "",
            "The main job's recipe (distillation, ramp and recalibration; 2 epochs for the baseline and 2 for Zebra) "
            "with one kept-block density for every map (MobileNet-V2: one for its large early maps, one for the rest), "
            "on networks other than the main one. The fine-tune's one-cycle schedule peaks at the learning rate of "
            "the table: the main job's 0.1 where the network fine-tunes well at it (`ARCHITECTURES` in "
            "`benchmarks/reference.py` says why a network has another):", "",
            f"| network | kept blocks | fine-tune peak lr | baseline top-1 % | Zebra top-1 % | {DELTA_TOP1_TITLE} | "
            "ZVC of the baseline % | Zebra+ZVC % |", "|---|---|---|---|---|---|---|---|", *rows, ""]


def _densities(density: float | dict[str, float]) -> str:
    """A density setting as a table cell: the fraction, or each pattern's."""
    if isinstance(density, dict):
        return ", ".join(f"{value:g} (`{pattern}`)" for pattern, value in density.items())
    return f"{density:g}"


def slimming_markdown(claim: dict | None, best: dict[str, float]) -> list[str]:
    """Every Slimming+Zebra point against Slimming alone at its cut, then what was measured against the paper's
    claim (``best``: each method's largest reduction within the budget)."""
    if not claim:
        return []
    points = "; ".join(f"`{p['label']}` {p['top1'] * 100:.2f} % at {p['reduction'] * 100:.1f} % ({p['format']})"
                       for p in claim["slimming_points"])
    lines = ["## Slimming alone against Slimming+Zebra", "", f"Slimming alone, each ratio: {points}.", ""]
    for c in claim.get("comparisons", [claim]):
        lines.append(f"- At the traffic cut of `{c['slim_zebra_label']}` ({c['traffic_reduction'] * 100:.1f} %), with "
                     f"the same training budget: Slimming+Zebra {c['slim_zebra_top1'] * 100:.2f} %, Slimming alone "
                     f"{c['slimming_top1'] * 100:.2f} % ({c['slimming_top1_is']}).")
    return [*lines, "", slimming_verdict(claim, best), ""]


def slimming_verdict(claim: dict, best: dict[str, float]) -> str:
    """Slimming+Zebra's measured gain over Slimming alone beside the paper's, and its best cut within the budget
    beside Zebra alone's."""
    gain = (claim["slim_zebra_top1"] - claim["slimming_top1"]) * 100
    if claim["slimming_top1_is"] == "interpolated":
        where = f"at the same traffic cut ({claim['traffic_reduction'] * 100:.1f} %)"
    elif max(p["reduction"] for p in claim["slimming_points"]) < claim["traffic_reduction"]:
        where = "at its largest cut, which is smaller: it does not reach Slimming+Zebra's cut at any ratio tried"
    else:
        where = "at its nearest cut (no two ratios bracket Slimming+Zebra's)"
    verdict = (f"Measured here, Slimming+Zebra's top-1 is {points_change(gain)} points against Slimming alone "
               f"{where}; the paper reports a gain of about +{PAPER_SLIMMING_GAIN:g} points from combining them.")
    if "slim-zebra" not in best:
        return f"{verdict} No Slimming+Zebra point is within {counted(BUDGET, 'point')} of the baseline's top-1."
    combined, alone = best["slim-zebra"] * 100, best.get("zebra")
    verdict += (f" The best Slimming+Zebra point within {counted(BUDGET, 'point')} of the baseline's top-1 cuts "
                f"{combined:.1f} %")
    if alone is None:
        return f"{verdict} of the traffic."
    side = "below" if combined < alone * 100 else "above"
    return f"{verdict} of the traffic, {side} Zebra alone ({alone * 100:.1f} %)."


def _finetune_epochs(point: Point) -> int | None:
    """The fine-tune epochs a point retrained the baseline (or the Slimming-pruned model, itself trained as
    long as the baseline) for, from its folder's config."""
    config = point.folder / "config.yaml" if point.folder else None
    if config is None or not config.is_file() or METHODS[point.method].start not in ("baseline", "pruned"):
        return None
    return yaml.safe_load(config.read_text())["finetune"]["epochs"]


def with_controls(points: list[Point]) -> list[tuple[Point, Point]]:
    """Each Zebra point retrained from the baseline, with the control (no masks) retrained for as many epochs."""
    controls = {_finetune_epochs(p): p for p in points if p.method == CONTROL}
    return [(p, controls[epochs]) for p in points if p.method != CONTROL and METHODS[p.method].zebra_masks
            and (epochs := _finetune_epochs(p)) in controls]


def best_against_control(pairs: list[tuple[Point, Point]]) -> dict | None:
    """The largest reduction within the budget of the dense model retrained for as many epochs (the stricter test),
    over the (point, control) ``pairs`` of ``with_controls``."""
    within = [(p, c) for p, c in pairs if (c.top1 - p.top1) * 100 <= BUDGET]
    if not within:
        return None
    p, c = max(within, key=lambda pair: pair[0].best_reduction)
    return {"method": p.method, "label": p.label, "control": c.label, "top1": p.top1, "control_top1": c.top1,
            "top1_drop_points": (c.top1 - p.top1) * 100, "format": p.best_format, "reduction": p.best_reduction}


def controls_markdown(points: list[Point], pairs: list[tuple[Point, Point]], best: dict | None) -> list[str]:
    """What retraining the dense baseline with the same recipes, without masks, gives on its own, and each
    retrained Zebra point's drop against the control with its number of epochs (``pairs``)."""
    controls = [p for p in points if p.method == CONTROL]
    if not controls:
        return []
    lines = [f"- `{p.label}` ({_finetune_epochs(p)} epochs): {p.top1 * 100:.2f} % ({points_change(p.delta)} points "
             "against the baseline)" for p in controls]
    rows = [f"| `{p.label}` | {p.top1 * 100:.2f} | {points_change(p.delta)} | "
            f"{points_change((p.top1 - c.top1) * 100)} | {p.best_reduction * 100:.1f} |" for p, c in pairs]
    verdict = (f"Best within {BUDGET:g} point of its control: `{best['label']}`, {best['reduction'] * 100:.1f} % "
               f"({best['format']}) at {points_change(-best['top1_drop_points'])} points against it." if best else
               f"No Zebra point is within {BUDGET:g} point of its control.")
    return ["## How much is the extra training (controls)", "",
            "Every Zebra model retrained from the dense baseline has seen more epochs than the baseline it is "
            "compared with. The dense baseline retrained with the same recipes and no masks:", "", *lines, "",
            "| Zebra point | top-1 % | Δ top-1 against the baseline (points, negative = loss) | Δ top-1 against the "
            "control of its epochs (points) | best reduction % |", "|---|---|---|---|---|", *rows, "", verdict, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/reference"))
    parser.add_argument("--results", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/results.json"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS),
                        help="what to run (finished stages are read, not rerun); the documents show all that is there")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    keep_freed_memory()  # as the zebra command does: the main job's wall time is make run's
    started = time.perf_counter()
    entries = main_job(args.run_dir, args.seeds, args.set, run="main" in args.steps)
    if "calibrate" in args.steps:
        calibration(args.run_dir)
    networks = architectures(args.run_dir, args.set, run="architectures" in args.steps)
    cached = cached_targets(args.run_dir, args.seeds, args.set, run="targets" in args.steps)
    if "levers" in args.steps:
        levers(args.run_dir, args.set)
    points = points_of(args.run_dir)
    pairs = with_controls(points)
    command = f"python benchmarks/reference.py --seeds {' '.join(map(str, args.seeds))}" + "".join(
        f" --set {s}" for s in args.set)
    document = {"generated_by": command, "generated_at": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
                "target": TARGET, "budget_points": BUDGET, "main_job": entries, "main_job_summary": summary(entries),
                "best": best_point(points), "best_against_control": best_against_control(pairs),
                "no_training": no_training(points), "architectures": networks, "cached_targets": cached,
                "cached_targets_summary": summary(cached) if cached else None,
                "slimming_claim": slimming_claim(points),
                "points": [{"method": p.method, "label": p.label, "top1": p.top1, "baseline_top1": p.baseline_top1,
                            "drop_points": p.drop, "reduction": p.reduction} for p in points]}
    atomic_write_text(args.json, json.dumps(document, indent=2))
    atomic_write_text(args.results, markdown(document, points, pairs, args.run_dir))
    if args.json.resolve() == RESULTS:  # the published results: README.md's box shows them
        atomic_write_text(README, with_box(README.read_text(), document))
    minutes = (time.perf_counter() - started) / 60
    print(f"{args.results} and {args.json} written ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
