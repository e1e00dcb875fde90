"""Training and evaluation: train from scratch or fine-tune, with or without Zebra, resumable.

Every model is trained as a *prepared* model: with Zebra off all call sites are inactive (no mask, no
regulariser; the outputs are the plain model's bit for bit) but still measured, so the dense baseline
and the Zebra model get their accuracy and traffic from the same evaluation code.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..analysis.measure import TrafficReport
from ..config.run import ConfigError, OptimSection, RunConfig, changed_settings, save_config, stage_differences
from ..core import COMPRESSED
from ..data import DataSpec, DeviceBatches
from ..errors import ZebraError
from ..results import BASELINE, CHECKPOINT, REPORT, ZEBRA, Machine, RunInfo, RunResult, model_row, write_result
from . import distributed
from .building import build_data, build_prepared_model, evaluate, make_loader, resolve_device
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model_state, load_weights, save_checkpoint
from .extensions import Extension, TrainRun, zebra_extensions
from .metrics import metric_loggers
from .optim import build_optimizer, build_scheduler
from .precision import resolve_precision, resolved


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What one ``train`` call leaves: the trained (prepared) model, its final evaluation and its folder."""

    model: nn.Module | None  # None for a finished training read back from its folder without loading the model
    report: TrafficReport
    metrics: list[dict[str, Any]]
    run_dir: Path
    seconds: float  # this call's wall time, plus the epoch times of a resumed stage's earlier calls


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    optim: OptimSection | None = None,
    masked: bool | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    extensions: list[Extension] | tuple[Extension, ...] = (),
    progress: bool = True,
) -> TrainResult:
    """Train with the optimiser settings ``optim`` (default ``config.train``) into ``run_dir``; evaluate after
    every epoch.

    ``masked`` (Zebra's masks active; default ``config.zebra.enabled``) adds Zebra's extension (calibration,
    penalty); ``extensions`` add other methods' work (e.g. ``BnSparsity``). ``init`` fine-tunes from a checkpoint's
    weights (and takes its pruned shapes); ``resume`` continues from ``run_dir/last.pt`` where it stopped.
    """
    masked = config.zebra.enabled if masked is None else masked
    run_dir = Path(run_dir)
    world, device = distributed.setup(resolve_device(config.device))
    precision = resolve_precision(optim or config.train, device)
    optim = resolved(optim or config.train, device)
    config = replace(config, train=resolved(config.train, device), finetune=resolved(config.finetune, device))
    if world.main:
        print(f"training in {precision.describe()}", flush=True)
    batch_size = _rank_batch(config, optim, world, device)
    train_set, test_set, spec = build_data(config)
    checkpoint_path = run_dir / CHECKPOINT
    resuming = resume and checkpoint_path.exists()
    origin = checkpoint_path if resuming else init
    source = load_checkpoint(origin) if origin is not None else None
    model = _start_model(config, spec, masked, source, None if resuming or init is None else f"checkpoint {init}")
    model.to(device)
    loggers = metric_loggers(run_dir, optim.tensorboard) if world.main else []  # only the main process writes
    run = new_run(config, optim, model, world, device, _steps_per_epoch(train_set, batch_size, optim, world),
                   [*(zebra_extensions(config.zebra) if masked else []), *extensions, *loggers], progress)
    _check_names(run.extensions)
    template = Checkpoint({}, config.to_dict(), spec.__dict__, masked, source.structure if source else None,
                          _fields(optim), extensions=_extension_settings(extensions))  # each epoch adds the state
    _open_run_dir(run_dir, world)
    start_epoch = (_restore(run, source, template, checkpoint_path, from_scratch=init is None)
                   if resuming and source is not None else 0)
    if world.main:
        save_config(config, run_dir / "config.yaml")
    earlier = sum(row.get("seconds", 0.0) for row in run.metrics)  # the epochs a resumed stage trained before
    started = time.perf_counter()  # what the extensions do before the first step counts too (cached targets' pass)
    for extension in run.extensions:
        extension.train_start(run)
    report = _train_epochs(run, start_epoch, (train_set, test_set), batch_size, checkpoint_path, template)
    report = report or evaluate(model, test_set, config, device, progress)  # nothing left to train: evaluate it
    seconds = earlier + time.perf_counter() - started
    for extension in run.extensions:
        extension.train_end(run, report)
    if world.main:
        _write_report(report, run_dir, config, masked, seconds, Machine.here(device, precision.describe()))
    return TrainResult(model, report, run.metrics, run_dir, seconds)


def _train_epochs(run: TrainRun, start_epoch: int, data: tuple[Any, Any], batch_size: int, path: Path,
                  template: Checkpoint) -> TrafficReport | None:
    """Train every epoch from ``start_epoch`` on, evaluate after those ``eval_every`` picks and the last, and write
    ``template`` with the training state to ``path`` after each; returns the last evaluation (None when no epoch
    was left)."""
    train_set, test_set = data
    report = None
    indexed = any(extension.needs_index for extension in run.extensions)
    for epoch in range(start_epoch, run.optim.epochs):
        run.epoch = epoch
        epoch_seed = run.config.seed * 1000 + epoch
        torch.manual_seed(epoch_seed)
        with training_layout(run.model, run.optim.channels_last is True):  # resolved: a bool
            row = _train_epoch(run, make_loader(train_set, batch_size, run.config.data, run.device, True, epoch_seed,
                                                run.world, indexed))
        evaluated = epoch + 1 == run.optim.epochs or (run.optim.eval_every and (epoch + 1) % run.optim.eval_every == 0)
        report = evaluate(run.model, test_set, run.config, run.device, run.progress) if evaluated else None
        if report is not None:
            row.update(test_acc=report.accuracy, **{fmt: report.reduction(fmt) for fmt in COMPRESSED})
        run.metrics.append(row)
        for extension in run.extensions:
            extension.after_evaluation(run, row, report)
        if run.world.main:
            print(_epoch_line(row, run.optim.epochs), flush=True)
            _save(path, replace(template, epoch=epoch + 1, model=run.model.state_dict(), rng=_rng_state(),
                                optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                                metrics=run.metrics, extension_state=_extension_state(run.extensions)))
    return report


def _rank_batch(config: RunConfig, optim: OptimSection, world: distributed.World, device: torch.device) -> int:
    """This process's share of ``data.batch_size`` (the global batch); settings the machine cannot run are refused."""
    if config.data.batch_size % world.size:
        raise ConfigError(f"data.batch_size={config.data.batch_size} must divide among {world.size} processes")
    if optim.sync_bn and device.type == "cpu":
        raise ConfigError("train.sync_bn needs GPUs: SyncBatchNorm has no CPU kernel; set train.sync_bn=false on CPU")
    return config.data.batch_size // world.size


def _start_model(config: RunConfig, spec: DataSpec, masked: bool, source: Checkpoint | None,
                 fine_tune_from: str | None) -> nn.Module:
    """The prepared model at its start: seeded initial weights, the source checkpoint's pruned shapes, and
    when fine-tuning (``fine_tune_from`` names the source) its weights, keeping the new Zebra thresholds."""
    torch.manual_seed(config.seed)  # the same initial weights for every run with this seed
    model = build_prepared_model(config, spec, masked, source.structure if source else None)
    if fine_tune_from is not None and source is not None:
        load_weights(model, source.model, fine_tune_from)
    return model


def _steps_per_epoch(train_set, batch_size: int, optim: OptimSection, world: distributed.World) -> int:
    share = len(train_set) // world.size
    steps = share // batch_size if share > batch_size else 1
    return min(steps, optim.max_steps or steps)


def new_run(config: RunConfig, optim: OptimSection, model: nn.Module, world: distributed.World,
            device: torch.device, steps_per_epoch: int, extensions: list[Extension], progress: bool) -> TrainRun:
    """The optimiser, schedule, (under torchrun) DistributedDataParallel wrapper and compilation of a training."""
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, optim.epochs * steps_per_epoch)
    trained = model
    if world.size > 1:
        if optim.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if optim.compile or (optim.compile is None and device.type == "cuda"):
        # the training step only: counting and calibration run the eager model
        trained = cast(nn.Module, torch.compile(trained))
    return TrainRun(model, trained, optimizer, scheduler, nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing),
                    config, optim, device, world, steps_per_epoch, extensions, progress and world.main)


def _check_names(extensions: list[Extension]) -> None:
    """Each extension's name keys its settings and state in checkpoints: two of one name are refused."""
    names = [extension.name for extension in extensions]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ZebraError(f"two training extensions are named {', '.join(map(repr, twice))}: give each extension "
                         "class its own name (class attribute `name`)")


def _extension_settings(extensions) -> dict[str, dict[str, Any]]:
    """The settings a resume must match: those of the extensions that change results (not the loggers')."""
    return {extension.name: extension.settings() for extension in extensions if extension.changes_results}


def _extension_state(extensions: list[Extension]) -> dict[str, dict[str, Any]]:
    """What each extension saves in the checkpoint (extensions without state save nothing)."""
    states = {extension.name: extension.state_dict() for extension in extensions}
    return {name: state for name, state in states.items() if state}


def _open_run_dir(run_dir: Path, world: distributed.World) -> None:
    """Create the folder and drop temporary files of a process killed while writing."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if world.main:  # a process killed while writing leaves a temporary file (never a half-written checkpoint)
        for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
            stale.unlink(missing_ok=True)


def _restore(run: TrainRun, source: Checkpoint, expected: Checkpoint, path: Path, from_scratch: bool) -> int:
    """Continue exactly where the checkpoint stopped, extensions' state included; a checkpoint of other settings
    (those that change results) is refused, naming them. Returns the epoch to start with."""
    if source.optimizer is None:
        raise CheckpointError(f"{path} holds no training state (a pruned or calibrated model): fine-tune from it "
                              "with --init instead of --resume")
    differ = _resume_differences(source, expected, run, from_scratch)
    if differ:
        raise CheckpointError(f"{path} was written by a run with other settings: {'; '.join(differ)}; resume with "
                              "the same settings or train into a new --run-dir")
    load_model_state(run.model, source.model, f"checkpoint {path}")
    run.optimizer.load_state_dict(source.optimizer)
    run.scheduler.load_state_dict(source.scheduler)
    if source.rng is not None:
        _set_rng_state(source.rng)
    run.metrics = list(source.metrics)
    for extension in run.extensions:
        if extension.name in source.extension_state:
            extension.load_state_dict(source.extension_state[extension.name])
    return source.epoch


def _resume_differences(source: Checkpoint, expected: Checkpoint, run: TrainRun, from_scratch: bool) -> list[str]:
    """Every setting that changes results and differs between a checkpoint and the run resuming it (an unmasked
    stage ignores the Zebra settings, a dense baseline the fine-tune's too: ``stage_differences``)."""
    masked = source.masked or expected.masked
    baseline = not masked and from_scratch and not (source.extensions or expected.extensions)
    differ = (stage_differences(source.config, run.config, masked, baseline)
              + changed_settings(source.optim or {}, run.optim, "optim"))
    if source.masked != expected.masked:
        differ.append(f"Zebra masks {'on' if source.masked else 'off'} (here {'on' if expected.masked else 'off'})")
    for name in sorted(set(source.extensions) | set(expected.extensions)):
        before, after = source.extensions.get(name), expected.extensions.get(name)
        if before != after:
            differ.append(f"extension {name}={before} (here {after})")
    return differ


def _fields(optim: OptimSection) -> dict[str, Any]:
    return {k: getattr(optim, k) for k in optim.__dataclass_fields__}


def _save(path: Path, payload: Checkpoint) -> None:
    """Write a checkpoint; a full disk or a read-only folder stops training with the last good one intact."""
    try:
        save_checkpoint(path, payload)
    except OSError as error:
        raise TrainingError(f"cannot write checkpoint {path}: {error.strerror or error}; the previous checkpoint "
                            f"is intact. Free space or fix the folder's permissions, then continue with --resume"
                            ) from error


@contextmanager
def training_layout(model: nn.Module, channels_last: bool) -> Iterator[None]:
    """The model in channels_last while it trains (where chosen), back in its plain layout afterwards, so that
    evaluation, counting and calibration measure it as deployed."""
    if not channels_last:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _train_epoch(run: TrainRun, loader: DataLoader | DeviceBatches) -> dict[str, Any]:
    """One epoch of ``run``; returns its metrics row (with every extension's columns)."""
    run.trained.train()
    started = time.perf_counter()
    total_loss = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.int64)
    seen = 0
    first_bad = torch.full((), -1, device=run.device, dtype=torch.int64)
    steps = run.steps_per_epoch
    bar = tqdm(loader, total=steps, desc=f"epoch {run.epoch + 1}/{run.optim.epochs}", disable=not run.progress,
               leave=False)
    for step, (inputs, labels, *index) in enumerate(bar):
        if step >= steps:
            break
        run.step = step
        run.batch_index = index[0].to(run.device, non_blocking=True) if index else None
        inputs, labels = to_device(run, inputs, labels)
        loss, outputs = train_step(run, inputs, labels)
        total_loss += loss.detach().float() * len(labels)
        correct += (outputs.detach().argmax(1) == labels).sum()
        seen += len(labels)
        # Remember the first non-finite step on the device; look at it every 20 steps (no sync per step).
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad)
        if step % 20 == 0 or step + 1 == steps:
            _stop_if_non_finite(distributed.any_rank(first_bad, run.world), run.epoch)
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}")
    _stop_if_non_finite(distributed.any_rank(first_bad, run.world), run.epoch)
    seconds = time.perf_counter() - started
    row = {"epoch": run.epoch + 1, "lr": run.optimizer.param_groups[0]["lr"],
           "train_loss": total_loss.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1),
           "seconds": seconds, "images_per_s": seen / seconds}
    for extension in run.extensions:
        extension.epoch_end(run, row)
    return row


def to_device(run: TrainRun, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the run's device, in its training memory format."""
    return run.training_inputs(inputs), labels.to(run.device, non_blocking=True)


def train_step(run: TrainRun, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, task loss plus every extension's term, backward, optimiser and schedule step, with their hooks."""
    for extension in run.extensions:
        extension.before_forward(run, inputs)
    with run.autocast():
        outputs = run.trained(inputs)
        loss = run.criterion(outputs, labels)
        for extension in run.extensions:
            term = extension.extra_loss(run, inputs, outputs, labels)
            if term is not None:
                loss = loss + term
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for extension in run.extensions:
        extension.after_backward(run)
    run.optimizer.step()
    run.scheduler.step()
    for extension in run.extensions:
        extension.after_optimizer_step(run)
    return loss, outputs


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int) -> None:
    step = int(first_bad)
    if step >= 0:
        raise TrainingError(f"loss became non-finite (nan or inf) at epoch {epoch + 1}, step {step}; the last good "
                            "checkpoint is kept. Lower train.lr or zebra.lam")


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The epoch's progress line; the test figures where the epoch was evaluated (``train.eval_every``)."""
    test = (f"test {row['test_acc']:.2%}  reduction zvc {row['zvc']:.1%} zebra {row['zebra']:.1%} "
            f"zebra+zvc {row['zebra_zvc']:.1%}  " if "test_acc" in row else "")
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.2%}  {test}"
            f"lam {row.get('lam', 0.0):g}  {row['images_per_s']:.0f} img/s")


def _write_report(report: TrafficReport, run_dir: Path, config: RunConfig, masked: bool, seconds: float,
                  machine: Machine) -> None:
    """The training's ``report.json`` (a one-row result) and ``traffic.csv``."""
    row = model_row(run_dir.name, ZEBRA if masked else BASELINE, report, report, seconds=seconds, folder=run_dir)
    info = RunInfo("zebra train", machine, seconds)
    write_result(run_dir / REPORT, RunResult("train", info, config.to_dict(), row.label, (row,)))
    report.to_csv(run_dir / "traffic.csv")
