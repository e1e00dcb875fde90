"""Network Slimming flows on the training engine: sparsity-train, prune a checkpoint, fine-tune (with or
without Zebra), and the four-way comparison baseline / Slimming / Zebra / Slimming+Zebra."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import slim
from ..analysis.cost import model_cost
from ..analysis.measure import TrafficReport
from ..config.run import OptimSection, RunConfig, save_config
from ..errors import ZebraError
from ..results import (
    BASELINE,
    CHECKPOINT,
    METHODS,
    PRUNED_STAGE,
    SPARSE_STAGE,
    ZEBRA,
    RunResult,
    method_extensions,
    model_row,
    slim_flows,
)
from ..results.tables import slim_markdown
from ..training.building import example_inputs
from ..training.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from ..training.opening import OpenedCheckpoint, open_checkpoint
from ..training.trainer import TrainResult, train
from .run import publish, run_info, stage_row

PRUNED = "pruned.pt"


def prune_checkpoint(source: str | Path, target: str | Path | None,
                     overrides: list[str] | tuple[str, ...] = ()) -> slim.SlimPlan:
    """Plan and remove channels of a trained checkpoint (settings from its config's ``slim`` section and
    ``overrides``) and write the pruned model to ``target``, a checkpoint that ``zebra eval`` and ``--init``
    rebuild. ``source`` is never written to; with ``target=None`` only the plan is made."""
    source = Path(source)
    if target is not None and Path(target).resolve() == source.resolve():
        raise CheckpointError(f"the pruned model would overwrite {source}: write it to another file")
    opened = open_checkpoint(source, overrides, device=torch.device("cpu"))
    model, config, payload = opened.model, opened.config, opened.payload
    inputs = opened.example_inputs()
    section = config.slim
    plan = slim.plan(model, section.ratio, inputs, min_channels=section.min_channels, exclude=section.exclude)
    if target is None:
        return plan
    pruned = slim.prune(model, plan=plan, example_inputs=inputs)
    save_checkpoint(target, Checkpoint(pruned.state_dict(), config.to_dict(), payload.spec, payload.masked,
                                       slim.structure(pruned), derived_from=str(source), plan=asdict(plan)))
    return plan


@dataclass
class _Stages:
    """Numbered, announced training stages of one flow in one run folder."""

    config: RunConfig
    run_dir: Path
    resume: bool
    progress: bool
    total: int
    number: int = 0

    def announce(self, title: str) -> None:
        self.number += 1
        print(f"[{self.number}/{self.total}] {title}", flush=True)

    def train(self, method: str, title: str, optim: OptimSection, init: Path | None = None,
              zebra_masks: bool | None = None) -> TrainResult:
        """Train ``method``'s stage in its folder, with its extensions, and with Zebra's masks when it has them
        (``zebra_masks`` overrides that: the joint flow's sparsity training has them)."""
        entry = METHODS[method]
        folder = self.run_dir / entry.stage
        self.announce(f"{title}: {optim.epochs} epochs -> {folder}")
        masks = entry.zebra_masks if zebra_masks is None else zebra_masks
        return train(self.config, folder, optim=optim, masked=masks, init=init, resume=self.resume,
                     extensions=method_extensions(method, self.config), progress=self.progress)


def run_slim(config: RunConfig, run_dir: str | Path, flow: str = "slim", resume: bool = False,
             progress: bool = True) -> RunResult:
    """Run one Network Slimming flow into ``run_dir`` and write ``report.md``/``report.json``.

    ``slim``: sparsity-train (``train`` section, ``slim.s``), prune (``slim.ratio``), fine-tune
    (``finetune`` section). ``slim-zebra``: the same, fine-tuned with Zebra. ``joint``: Zebra and BN
    sparsity trained together, prune, fine-tune with Zebra. ``compare``: the dense baseline, Zebra
    fine-tuned from it, ``slim`` and ``slim-zebra`` (sharing one sparsity-trained model), side by side.
    """
    flows = slim_flows()
    if flow not in flows:
        raise ZebraError(f"flow={flow!r} is unknown: use one of {', '.join(flows)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    compare = flow == "compare"
    stages = _Stages(config, run_dir, resume, progress, 2 * compare + 2 + len(flows[flow]))
    trained: dict[str, TrainResult] = {}
    if compare:
        trained[BASELINE] = stages.train(BASELINE, "dense baseline", config.train)
        trained[ZEBRA] = stages.train(ZEBRA, "Zebra fine-tune from the baseline", config.finetune,
                                      init=run_dir / METHODS[BASELINE].stage / CHECKPOINT)
    joint = flow == "joint"
    trained[SPARSE_STAGE] = stages.train(
        SPARSE_STAGE, f"sparsity training (s={config.slim.s:g}{', with Zebra' if joint else ''})", config.train,
        zebra_masks=joint)
    pruned_path = run_dir / PRUNED
    stages.announce(f"prune {config.slim.ratio:.0%} of the channels -> {pruned_path}")
    if not (resume and pruned_path.exists()):
        print(prune_checkpoint(run_dir / METHODS[SPARSE_STAGE].stage / CHECKPOINT, pruned_path), flush=True)
    opened = open_checkpoint(pruned_path)
    pruned = opened, opened.evaluate(progress)
    for method in flows[flow]:
        masks = METHODS[method].zebra_masks
        trained[method] = stages.train(method, f"fine-tune the pruned model{' with Zebra' if masks else ''}",
                                       config.finetune, init=pruned_path)
    result = _result(config, flow, trained, pruned, run_info(f"zebra slim --flow {flow}", config, started))
    return publish(run_dir, result, slim_markdown(result, flow))


def _result(config: RunConfig, flow: str, trained: dict[str, TrainResult],
            pruned: tuple[OpenedCheckpoint, TrafficReport], info) -> RunResult:
    """The flow's rows (baseline, Zebra, sparsity-trained, pruned, fine-tuned), with parameters and MACs, every
    reduction against the dense baseline (or, without one, the sparsity-trained model)."""
    opened, pruned_report = pruned
    reference_method = BASELINE if BASELINE in trained else SPARSE_STAGE
    reference = trained[reference_method].report
    inputs = example_inputs(opened.spec)
    rows = []
    for method, stage in trained.items():  # in the order they were trained, the pruned model after its source
        assert stage.model is not None  # trained (or resumed) by this flow: the model is at hand
        cost = model_cost(stage.model, inputs)
        rows.append(stage_row(method, stage, reference, params=cost.params, macs=cost.macs))
        if method == SPARSE_STAGE:
            cost = model_cost(opened.model, inputs)
            rows.append(model_row(METHODS[PRUNED_STAGE].title, PRUNED_STAGE, pruned_report, reference,
                                  params=cost.params, macs=cost.macs))
    label = METHODS[reference_method].title
    return RunResult("slim", info, config.to_dict(), label, tuple(rows))
