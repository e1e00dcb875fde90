"""The training loop's extension points, and each method's work written as an extension.

A method adds its work to training as an ``Extension`` instead of another parameter of ``train`` (like
timm's ``train_one_epoch`` callbacks or Torch-Pruning's ``regularize(model)`` hook): ``before_forward``
(e.g. recalibrate thresholds), ``extra_loss`` (a term added to the task loss), ``after_backward`` (e.g. a
subgradient on some parameters) and ``epoch_end`` (columns of the epoch's metrics row). Every hook is
optional; ``settings`` is what must match for ``--resume`` to continue a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import slim
from ..calibrate import calibrate
from ..nn import set_penalty
from ..regularizer import zero_block_loss
from .config import OptimSection, RunConfig, ZebraSection
from .distributed import World


@dataclass
class TrainRun:
    """What the epoch loop and its extensions see of one training stage (``epoch``/``step`` move on)."""

    model: nn.Module  # the prepared model
    trained: nn.Module  # what runs forward and backward: the model or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    config: RunConfig
    stage: OptimSection
    device: torch.device
    world: World
    steps_per_epoch: int
    extensions: list["Extension"]
    progress: bool = True
    epoch: int = 0
    step: int = 0

    @property
    def global_step(self) -> int:
        """Steps taken in this stage before the current one."""
        return self.epoch * self.steps_per_epoch + self.step


class Extension:
    """A method's work inside the training loop; subclasses override the hooks they need."""

    name: ClassVar[str] = "extension"

    def settings(self) -> dict[str, Any]:
        """What a resumed run must have in common with the one that wrote the checkpoint."""
        return {}

    def before_forward(self, run: TrainRun, inputs: torch.Tensor) -> None:
        """Called before each training forward."""

    def extra_loss(self, run: TrainRun, inputs: torch.Tensor, outputs: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor | None:
        """A term added to the task loss (inside autocast), or None."""
        return None

    def after_backward(self, run: TrainRun) -> None:
        """Called after ``loss.backward()``, before the optimizer step."""

    def epoch_end(self, run: TrainRun, row: dict[str, Any]) -> None:
        """Add this extension's columns to the epoch's metrics row."""


class DensityCalibration(Extension):
    """Zebra's threshold policy: every active layer's threshold recalibrated on the current batch so that it
    keeps the target block density, which falls from 1 over ``density_ramp_steps`` (cubic, Zhu & Gupta 2017)."""

    name = "zebra_calibration"

    def __init__(self, section: ZebraSection) -> None:
        self.section = section

    def before_forward(self, run: TrainRun, inputs: torch.Tensor) -> None:
        every = self.section.calibrate_every
        if run.step == 0 or (every and run.step % every == 0):
            calibrate(run.model, [inputs], self.density(run.global_step))

    def density(self, step: int) -> float | dict[str, float]:
        """The kept-block fraction (or fraction per pattern) at ``step``."""
        ramp_steps = self.section.density_ramp_steps
        left = max(0.0, 1.0 - step / ramp_steps) if ramp_steps else 0.0
        ramp = lambda target: target + (1.0 - target) * left**3  # noqa: E731
        density = self.section.density
        return {p: ramp(v) for p, v in density.items()} if isinstance(density, dict) else ramp(density)


class ZeroBlockPenalty(Extension):
    """Zebra's regulariser: ``lambda * zero_block_loss(model)``, lambda per epoch and ramped over warm-up steps."""

    name = "zebra_penalty"

    def __init__(self, section: ZebraSection) -> None:
        self.section = section
        self.lam = 0.0

    def weight(self, epoch: int, step: int) -> float:
        """Lambda at ``epoch`` and global ``step``."""
        section = self.section
        base = section.lam_epochs[min(epoch, len(section.lam_epochs) - 1)] if section.lam_epochs else section.lam
        ramp = min(1.0, (step + 1) / section.warmup_steps) if section.warmup_steps else 1.0
        return base * ramp

    def before_forward(self, run: TrainRun, inputs: torch.Tensor) -> None:
        set_penalty(run.model, self.weight(run.epoch, run.global_step) != 0)  # none where it would count 0 times

    def extra_loss(self, run, inputs, outputs, labels):
        self.lam = self.weight(run.epoch, run.global_step)
        return self.lam * zero_block_loss(run.model) if self.lam else None

    def epoch_end(self, run: TrainRun, row: dict[str, Any]) -> None:
        row["lam"] = self.lam
        set_penalty(run.model, True)  # the trained model hands back penalties again, as a prepared one does


class BnSparsity(Extension):
    """Network Slimming's sparsity training: ``s * sign(gamma)`` added to every BatchNorm scale's gradient."""

    name = "bn_sparsity"

    def __init__(self, s: float, exclude: tuple[str, ...] | list[str] = ()) -> None:
        self.s = s
        self.exclude = tuple(exclude)

    def settings(self) -> dict[str, Any]:
        return {"s": self.s}

    def after_backward(self, run: TrainRun) -> None:
        if self.s:
            slim.bn_sparsity_step(run.model, self.s, self.exclude)

    def epoch_end(self, run: TrainRun, row: dict[str, Any]) -> None:
        row["bn_l1"] = slim.bn_l1(run.model, self.exclude)  # sum |gamma|: falls as sparsity training works


class Distillation(Extension):
    """Knowledge distillation from a trained teacher (Hinton et al. 2015): ``weight * T^2 * KL(teacher || model)``
    over logits softened by temperature ``T``, the teacher run in eval mode without gradients on the same batch."""

    name = "distillation"

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 4.0) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature

    def settings(self) -> dict[str, Any]:
        return {"weight": self.weight, "temperature": self.temperature}

    def extra_loss(self, run, inputs, outputs, labels):
        self.teacher.to(inputs.device)  # a no-op once it is there
        with torch.no_grad():
            target = self.teacher(inputs)
        return self.weight * distillation_loss(outputs, target, self.temperature)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def zebra_extensions(section: ZebraSection) -> list[Extension]:
    """What training with Zebra adds: threshold calibration (when a density is set) and the penalty."""
    return ([DensityCalibration(section)] if section.density is not None else []) + [ZeroBlockPenalty(section)]


def slimming(config: RunConfig) -> list[Extension]:
    """Network Slimming's sparsity training with the run's ``slim`` settings."""
    return [BnSparsity(config.slim.s, config.slim.exclude)]


def distillation(config: RunConfig, teacher: nn.Module) -> list[Extension]:
    """Distillation from ``teacher`` with the run's ``distill`` settings (none while its weight is 0)."""
    d = config.distill
    return [Distillation(teacher, d.weight, d.temperature)] if d.weight else []
