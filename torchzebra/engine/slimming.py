"""Network Slimming flows on the training engine: sparsity-train, prune a checkpoint, fine-tune (with or
without Zebra), and the four-way comparison baseline / Slimming / Zebra / Slimming+Zebra."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


from .. import slim
from .._io import atomic_write_text
from ..cost import model_cost
from ..data import DataSpec
from ..reports.compare import comparison_rows, rows_markdown, run_line, shapes_markdown
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import RunConfig, save_config
from .run import machine
from .trainer import CHECKPOINT, TrainResult, build_data, evaluate, example_inputs, rebuild, resolve_device, train

FLOWS = ("slim", "slim-zebra", "joint", "compare")
PRUNED = "pruned.pt"
SPARSE = "sparsity-trained, before pruning"
PRUNED_ROW = "pruned, before fine-tuning"


def prune_checkpoint(source: str | Path, target: str | Path | None,
                     overrides: list[str] | tuple[str, ...] = ()) -> slim.SlimPlan:
    """Plan and remove channels of a trained checkpoint (settings from its config's ``slim`` section and
    ``overrides``) and write the pruned model to ``target``, a checkpoint that ``zebra eval`` and ``--init``
    rebuild. ``source`` is never written to; with ``target=None`` only the plan is made."""
    source = Path(source)
    if target is not None and Path(target).resolve() == source.resolve():
        raise CheckpointError(f"the pruned model would overwrite {source}: write it to another file")
    payload = load_checkpoint(source)
    model, config = rebuild(payload, overrides, f"checkpoint {source}")
    inputs = example_inputs(DataSpec(**payload["spec"]))
    section = config.slim
    plan = slim.plan(model, section.ratio, inputs, min_channels=section.min_channels, exclude=section.exclude)
    if target is None:
        return plan
    pruned = slim.prune(model, plan=plan, example_inputs=inputs)
    save_checkpoint(target, {
        "config": config.to_dict(), "spec": payload["spec"], "zebra": payload["zebra"], "model": pruned.state_dict(),
        "structure": slim.structure(pruned), "plan": asdict(plan), "pruned_from": str(source),
    })
    return plan


def run_slim(config: RunConfig, run_dir: str | Path, flow: str = "slim", resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run one Network Slimming flow into ``run_dir`` and write ``report.md``/``report.json``.

    ``slim``: sparsity-train (``train`` section, ``slim.s``), prune (``slim.ratio``), fine-tune
    (``finetune`` section). ``slim-zebra``: the same, fine-tuned with Zebra. ``joint``: Zebra and BN
    sparsity trained together, prune, fine-tune with Zebra. ``compare``: the dense baseline, Zebra
    fine-tuned from it, ``slim`` and ``slim-zebra`` (sharing one sparsity-trained model), side by side.
    """
    if flow not in FLOWS:
        raise ValueError(f"flow={flow!r} is unknown: use one of {', '.join(FLOWS)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    steps = _steps(flow)
    total = len(steps) + 2 + ("baseline" in steps)  # the baseline step is two stages; sparsity and pruning two more
    results: dict[str, TrainResult] = {}

    def stage(number: int, title: str) -> None:
        print(f"[{number}/{total}] {title}", flush=True)

    number = 0
    if "baseline" in steps:
        number += 1
        stage(number, f"dense baseline: {config.train.epochs} epochs -> {run_dir / 'baseline'}")
        results["dense baseline"] = train(config, run_dir / "baseline", stage=config.train, zebra=False, resume=resume,
                                          progress=progress)
        number += 1
        stage(number, f"Zebra fine-tune from the baseline: {config.finetune.epochs} epochs -> {run_dir / 'zebra'}")
        results["Zebra"] = train(config, run_dir / "zebra", stage=config.finetune, zebra=True,
                                 init=run_dir / "baseline" / CHECKPOINT, resume=resume, progress=progress)
    number += 1
    joint = flow == "joint"
    stage(number, f"sparsity training (s={config.slim.s:g}{', with Zebra' if joint else ''}): "
                  f"{config.train.epochs} epochs -> {run_dir / 'sparse'}")
    sparse = train(config, run_dir / "sparse", stage=config.train, zebra=joint, sparsity=config.slim.s, resume=resume,
                   progress=progress)
    number += 1
    pruned_path = run_dir / PRUNED
    stage(number, f"prune {config.slim.ratio:.0%} of the channels -> {pruned_path}")
    if not (resume and pruned_path.exists()):
        print(prune_checkpoint(run_dir / "sparse" / CHECKPOINT, pruned_path), flush=True)
    pruned_model, pruned_report, spec = _evaluate_checkpoint(pruned_path, progress)
    for name in ("Slimming", "Slimming+Zebra"):
        if name in steps:
            zebra = name == "Slimming+Zebra"
            folder = run_dir / ("slim-zebra" if zebra else "slim")
            number += 1
            stage(number, f"fine-tune the pruned model{' with Zebra' if zebra else ''}: {config.finetune.epochs} "
                          f"epochs -> {folder}")
            results[name] = train(config, folder, stage=config.finetune, zebra=zebra, init=pruned_path, resume=resume,
                                  progress=progress)
    baseline = results.pop("dense baseline", None)
    zebra_result = results.pop("Zebra", None)
    trained = {
        **({"dense baseline": baseline} if baseline else {}), **({"Zebra": zebra_result} if zebra_result else {}),
        SPARSE: sparse, **results,
    }
    models = {name: result.model for name, result in trained.items()}
    reports = {name: result.report for name, result in trained.items()}
    models[PRUNED_ROW], reports[PRUNED_ROW] = pruned_model, pruned_report
    order = ("dense baseline", "Zebra", SPARSE, PRUNED_ROW, "Slimming", "Slimming+Zebra")
    reports = {name: reports[name] for name in order if name in reports}
    reference = "dense baseline" if baseline else SPARSE
    inputs = example_inputs(spec)
    costs = {name: model_cost(model, inputs) for name, model in models.items()}
    summary = {
        "command": f"zebra slim --flow {flow}",
        "flow": flow,
        "config": config.to_dict(),
        "machine": machine(resolve_device(config.device)),
        "wall_seconds": time.perf_counter() - started,
        "reference": reference,
        "rows": comparison_rows(reports, reference, costs),
        "reports": {name: report.to_dict() for name, report in reports.items()},
    }
    markdown = _markdown(summary, reports)
    atomic_write_text(run_dir / "report.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "report.md", markdown)
    print(markdown, flush=True)
    return summary


def _steps(flow: str) -> tuple[str, ...]:
    return {
        "slim": ("Slimming",),
        "slim-zebra": ("Slimming+Zebra",),
        "joint": ("Slimming+Zebra",),
        "compare": ("baseline", "Slimming", "Slimming+Zebra"),
    }[flow]


def _evaluate_checkpoint(path: Path, progress: bool):
    """(model, report on its test split, data spec) of a checkpoint."""
    payload = load_checkpoint(path)
    model, config = rebuild(payload, origin=f"checkpoint {path}")
    device = resolve_device(config.device)
    _, test_set, _ = build_data(config)
    return model, evaluate(model.to(device), test_set, config, device, progress), DataSpec(**payload["spec"])


def _markdown(summary: dict[str, Any], reports) -> str:
    config, s = summary["config"], summary["config"]["slim"]
    return "\n".join([
        f"# torchzebra Network Slimming — flow `{summary['flow']}`",
        "",
        run_line(summary),
        "",
        f"Model {config['model']['name']} {config['model']['options']} on {config['data']['name']}. Slimming: "
        f"sparsity s={s['s']:g} on every BatchNorm scale for {config['train']['epochs']} epochs, {s['ratio']:.0%} of "
        f"the BatchNorm channels removed (global |gamma| threshold, coupled residual channels together, at least "
        f"{s['min_channels']} channel(s) per layer), fine-tuned {config['finetune']['epochs']} epochs. Zebra block "
        f"{config['zebra']['block_size']}, density {config['zebra']['density']}. {config['bits']}-bit data, metadata "
        f"counted, one write plus one read per consumer. Every reduction is against the dense traffic of "
        f"'{summary['reference']}' (the slimmed models' smaller maps count as they are).",
        "",
        rows_markdown(summary["rows"]),
        "",
        "## Per layer: map shapes and Zebra+ZVC traffic (reduction of the reference layer's dense bytes)",
        "",
        shapes_markdown({name: report for name, report in reports.items()
                         if name == summary["reference"] or name not in (SPARSE, PRUNED_ROW)}, summary["reference"]),
        "",
    ])
