"""Training and evaluation: train from scratch or fine-tune, with or without Zebra, resumable.

Every model is trained as a *prepared* model: with Zebra off all call sites are inactive (no mask, no
regulariser; the outputs are the plain model's bit for bit) but still measured, so the dense baseline
and the Zebra model get their accuracy and traffic from the same evaluation code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .. import ZebraConfig, calibrate, measure, prepare, slim, zero_block_loss
from .._io import atomic_write_text
from ..data import DataSpec, build_datasets
from ..measure import TrafficReport
from ..models import build_model
from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from .config import (ConfigError, OptimSection, RunConfig, ZebraSection, apply_override, from_dict, same_settings,
                     save_config)
from .metrics import MetricsLog
from .optim import build_optimizer, build_scheduler

CHECKPOINT = "last.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a training stage leaves: the trained (prepared) model, its final evaluation and its folder."""

    model: nn.Module
    report: TrafficReport
    metrics: list[dict[str, Any]]
    run_dir: Path
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device={name!r} is invalid: use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} asked for, but no CUDA GPU is available: use device=auto or cpu")
    return device


def zebra_config(section: ZebraSection, enabled: bool) -> ZebraConfig:
    """The ZebraConfig of a run; with Zebra off every site is inactive (measured only)."""
    return ZebraConfig(
        block_size=section.block_size, score=section.score, threshold=section.threshold,
        penalty=section.penalty, include=tuple(section.include) if enabled else (),
        exclude=tuple(section.exclude),
    )


def build_data(config: RunConfig) -> tuple[Any, Any, DataSpec]:
    """(train set, test set, spec) of the run's data section."""
    d = config.data
    return build_datasets(d.name, d.root, d.size, d.augment, d.train_subset, d.test_subset, config.seed,
                          d.classes, d.channels, d.length)


def example_inputs(spec: DataSpec) -> torch.Tensor:
    """One zero image of the data's shape (for tracing and counting MACs)."""
    return torch.zeros(1, spec.channels, spec.size, spec.size)


def build_prepared_model(config: RunConfig, spec: DataSpec, zebra: bool, structure: dict[str, int] | None = None) -> nn.Module:
    """The configured model for ``spec``, shrunk to a pruned ``structure`` if given, then prepared
    (Zebra active or measured only)."""
    model = build_model(config.model.name, spec.classes, spec.channels, **config.model.options)
    if structure:
        slim.restructure(model, structure, example_inputs(spec))
    return prepare(model, zebra_config(config.zebra, zebra))


def _loader(dataset, batch_size: int, workers: int, device: torch.device, shuffle: bool, seed: int,
            world: distributed.World | None = None) -> DataLoader:
    """Shuffled (training) or in-order loader; under torchrun the training data is split across ranks."""
    sampler = None
    if shuffle and world is not None and world.size > 1:
        sampler = DistributedSampler(dataset, world.size, world.rank, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, num_workers=workers,
        generator=torch.Generator().manual_seed(seed) if shuffle and sampler is None else None,
        pin_memory=device.type == "cuda", drop_last=shuffle and len(dataset) > batch_size,
        persistent_workers=False,
    )


def evaluate(model: nn.Module, dataset, config: RunConfig, device: torch.device, progress: bool = True) -> TrafficReport:
    """Accuracy and traffic of ``model`` (prepared) on ``dataset`` in one pass; under torchrun each rank
    measures its share and the counts are summed, so the report equals a single process's."""
    world = distributed.current()
    loader = _loader(distributed.shard(dataset, world), config.data.eval_batch_size, config.data.workers, device,
                     False, 0)
    report = measure(model, loader, bits=config.bits, progress=progress and world.main)
    return distributed.reduce_report(report, world, device)


def _lambda(section: ZebraSection, epoch: int, step: int) -> float:
    base = section.lam_epochs[min(epoch, len(section.lam_epochs) - 1)] if section.lam_epochs else section.lam
    ramp = min(1.0, (step + 1) / section.warmup_steps) if section.warmup_steps else 1.0
    return base * ramp


def _density(section: ZebraSection, step: int) -> float | dict[str, float]:
    """The kept-block fraction at global ``step``: cubic ramp from 1 to the target (Zhu & Gupta 2017)."""
    left = max(0.0, 1.0 - step / section.density_ramp_steps) if section.density_ramp_steps else 0.0
    ramp = lambda target: target + (1.0 - target) * left**3  # noqa: E731
    if isinstance(section.density, dict):
        return {pattern: ramp(value) for pattern, value in section.density.items()}
    return ramp(section.density)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
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
    stage: OptimSection | None = None,
    zebra: bool | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    sparsity: float = 0.0,
    progress: bool = True,
) -> TrainResult:
    """Train one stage (``stage``, default ``config.train``) into ``run_dir``; evaluate after every epoch.

    ``zebra`` defaults to ``config.zebra.enabled``. ``init`` fine-tunes from a checkpoint's weights (and
    takes its pruned shapes); ``resume`` continues from ``run_dir/last.pt`` exactly where it stopped.
    ``sparsity`` > 0 adds Network Slimming's L1 subgradient on BatchNorm scales at every step.
    """
    stage = stage or config.train
    zebra = config.zebra.enabled if zebra is None else zebra
    run_dir = Path(run_dir)
    world, device = distributed.setup(resolve_device(config.device))
    progress = progress and world.main
    if config.data.batch_size % world.size:
        raise ConfigError(f"data.batch_size={config.data.batch_size} must divide among {world.size} processes")
    batch_size = config.data.batch_size // world.size  # data.batch_size is the global batch
    if stage.sync_bn and device.type == "cpu":
        raise ConfigError("train.sync_bn needs GPUs: SyncBatchNorm has no CPU kernel; set train.sync_bn=false on CPU")
    train_set, test_set, spec = build_data(config)
    checkpoint_path = run_dir / CHECKPOINT
    resuming = resume and checkpoint_path.exists()
    source = load_checkpoint(checkpoint_path if resuming else init) if resuming or init is not None else None
    torch.manual_seed(config.seed)  # the same initial weights for every run with this seed
    structure = source.get("structure") if source else None  # the channel counts of a pruned model
    model = build_prepared_model(config, spec, zebra, structure)
    if init is not None and not resuming:
        weights = {k: v for k, v in source["model"].items() if not k.startswith("zebra.")}
        load_model_state(model, {**{k: v for k, v in model.state_dict().items() if k.startswith("zebra.")}, **weights},
                         f"checkpoint {init}")
    model.to(device)
    if stage.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, stage)
    share = len(train_set) // world.size
    steps_per_epoch = share // batch_size if share > batch_size else 1
    steps_per_epoch = min(steps_per_epoch, stage.max_steps or steps_per_epoch)
    scheduler = build_scheduler(optimizer, stage, stage.epochs * steps_per_epoch)
    state = {"config": config.to_dict(), "stage": _stage_dict(stage), "zebra": zebra, "sparsity": sparsity,
             "spec": spec.__dict__, "structure": structure}
    run_dir.mkdir(parents=True, exist_ok=True)
    if world.main:  # a process killed while writing leaves a temporary file (never a half-written checkpoint)
        for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
            stale.unlink(missing_ok=True)
    log = MetricsLog(run_dir, write=world.main)
    start_epoch = 0
    if resuming:
        if not same_settings(source["config"], config) or any(
                source.get(key) != state[key] for key in ("stage", "zebra", "sparsity")):
            raise CheckpointError(f"{checkpoint_path} was written by a run with other settings; resume needs the same config")
        load_model_state(model, source["model"], f"checkpoint {checkpoint_path}")
        optimizer.load_state_dict(source["optimizer"])
        scheduler.load_state_dict(source["scheduler"])
        _set_rng_state(source["rng"])
        start_epoch = source["epoch"]
        log.rows = list(source["metrics"])
    if world.main:
        save_config(config, run_dir / "config.yaml")
    trained = model  # what runs forward and backward: the model itself, or its DistributedDataParallel wrapper
    if world.size > 1:
        if stage.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = nn.CrossEntropyLoss(label_smoothing=stage.label_smoothing)
    started = time.perf_counter()
    report = None
    for epoch in range(start_epoch, stage.epochs):
        epoch_seed = config.seed * 1000 + epoch
        torch.manual_seed(epoch_seed)
        loader = _loader(train_set, batch_size, config.data.workers, device, True, epoch_seed, world)
        row = _train_epoch(trained, model, loader, optimizer, scheduler, criterion, config, stage, zebra, sparsity,
                           device, epoch, steps_per_epoch, progress, world)
        report = evaluate(model, test_set, config, device, progress)
        row.update(test_acc=report.accuracy, **{fmt: report.reduction(fmt) for fmt in ("zvc", "zebra", "zebra_zvc")})
        log.append(row)
        if world.main:
            print(_epoch_line(row, stage.epochs), flush=True)
            _save(checkpoint_path, {
                **state, "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(), "metrics": log.rows,
            })
    if report is None:  # nothing left to train: evaluate what the checkpoint holds
        report = evaluate(model, test_set, config, device, progress)
    if world.main:
        _write_report(report, run_dir)
    log.close()
    return TrainResult(model, report, log.rows, run_dir, time.perf_counter() - started)


def _stage_dict(stage: OptimSection) -> dict[str, Any]:
    return {k: getattr(stage, k) for k in stage.__dataclass_fields__}


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint; a full disk or a read-only folder stops training with the last good one intact."""
    try:
        save_checkpoint(path, payload)
    except OSError as error:
        raise TrainingError(f"cannot write checkpoint {path}: {error.strerror or error}; the previous checkpoint "
                            f"is intact. Free space or fix the folder's permissions, then continue with --resume"
                            ) from error


def _train_epoch(trained, model, loader, optimizer, scheduler, criterion, config, stage, zebra, sparsity, device,
                 epoch, steps, progress, world):
    """One epoch: ``trained`` (the model or its DDP wrapper) runs forward/backward; ``model`` is the model."""
    trained.train()
    started = time.perf_counter()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    lam = 0.0
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{stage.epochs}", disable=not progress, leave=False)
    for step, (inputs, labels) in enumerate(bar):
        if step >= steps:
            break
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if stage.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        calibrating = zebra and config.zebra.density is not None
        if calibrating and (step == 0 or (config.zebra.calibrate_every and step % config.zebra.calibrate_every == 0)):
            calibrate(model, [inputs], _density(config.zebra, epoch * steps + step))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=stage.amp):
            outputs = trained(inputs)
            loss = criterion(outputs, labels)
            if zebra:
                lam = _lambda(config.zebra, epoch, epoch * steps + step)
                if lam:
                    loss = loss + lam * zero_block_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if sparsity:
            slim.bn_sparsity_step(model, sparsity, config.slim.exclude)
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach().float() * len(labels)
        correct += (outputs.detach().argmax(1) == labels).sum()
        seen += len(labels)
        # Remember the first non-finite step on the device; look at it every 20 steps (no sync per step).
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad)
        if step % 20 == 0 or step + 1 == steps:
            _stop_if_non_finite(distributed.any_rank(first_bad, world), epoch)
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}")
    _stop_if_non_finite(distributed.any_rank(first_bad, world), epoch)
    seconds = time.perf_counter() - started
    train_loss = total_loss.item() / max(seen, 1)
    row = {
        "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "lam": lam, "train_loss": train_loss,
        "train_acc": correct.item() / max(seen, 1), "seconds": seconds, "images_per_s": seen / seconds,
    }
    if sparsity:
        row["bn_l1"] = slim.bn_l1(model, config.slim.exclude)  # sum |gamma|: falls as sparsity training works
    return row


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int) -> None:
    step = int(first_bad)
    if step >= 0:
        raise TrainingError(f"loss became non-finite (nan or inf) at epoch {epoch + 1}, step {step}; the last good "
                            "checkpoint is kept. Lower train.lr or zebra.lam")


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  train {row['train_acc']:.2%}  "
            f"test {row['test_acc']:.2%}  reduction zvc {row['zvc']:.1%} zebra {row['zebra']:.1%} "
            f"zebra+zvc {row['zebra_zvc']:.1%}  lam {row['lam']:g}  {row['images_per_s']:.0f} img/s")


def _write_report(report: TrafficReport, run_dir: Path) -> None:
    atomic_write_text(run_dir / "report.json", json.dumps(report.to_dict(), indent=2))
    report.to_csv(run_dir / "traffic.csv")


def load_trained(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[nn.Module, RunConfig]:
    """Rebuild a trained model (in eval mode) from its checkpoint; overrides may change e.g. data settings."""
    return rebuild(load_checkpoint(checkpoint), overrides, f"checkpoint {checkpoint}")


def rebuild(payload: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
            origin: str = "checkpoint") -> tuple[nn.Module, RunConfig]:
    """``load_trained`` for a checkpoint already read with ``load_checkpoint``."""
    values = payload["config"]
    for assignment in overrides:
        values = apply_override(values, assignment)
    config = from_dict(values)
    model = build_prepared_model(config, DataSpec(**payload["spec"]), payload["zebra"], payload.get("structure"))
    load_model_state(model, payload["model"], origin)
    return model.eval(), config
