"""The training loop's extension points, and each method's work written as an extension.

A method adds its work to training as an ``Extension`` instead of another parameter of ``train`` (like
Lightning's ``Callback`` or timm's ``train_one_epoch`` callbacks). Hooks, in the order the loop calls them:
``train_start`` (once, after a resume restored everything), then per step ``before_forward`` (e.g. recalibrate
thresholds), ``extra_loss`` (a term added to the task loss), ``after_backward`` (e.g. a subgradient on some
parameters) and ``after_optimizer_step``, per epoch ``epoch_end`` (columns of the epoch's metrics row) and
``after_evaluation`` (the complete row and the test report, None for an epoch not evaluated: loggers write
here), and once ``train_end``.
Every hook is optional. An extension with ``needs_index`` gets each batch's indices into the training set as
``run.batch_index``. ``settings`` is what must match for ``--resume`` to continue a run, ``state_dict`` what
the checkpoint keeps of the extension, given back to ``load_state_dict`` on resume.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.fx.proxy import TraceError

from .. import slim
from ..analysis.measure import TrafficReport
from ..config.run import OptimSection, RunConfig, ZebraSection
from ..config.sections import CACHED
from ..errors import ZebraError
from ..nn import set_penalty
from ..recipe import Distiller, ZebraRecipe
from ..results.methods import SPARSE_STAGE, bind_extensions
from .building import build_data, make_loader
from .distributed import World


@dataclass
class TrainRun:
    """What the epoch loop and its extensions see of one ``train`` call (``epoch``/``step`` move on)."""

    model: nn.Module  # the prepared model
    trained: nn.Module  # what runs forward and backward: the model or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    config: RunConfig
    optim: OptimSection  # the optimiser settings trained with: config.train or config.finetune
    device: torch.device
    world: World
    steps_per_epoch: int
    extensions: list["Extension"]
    progress: bool = True
    epoch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch, resumed ones included
    # The training set's indices of the current batch's items, where an extension asks for them (``needs_index``)
    batch_index: torch.Tensor | None = None

    @property
    def global_step(self) -> int:
        """Steps taken in this training before the current one."""
        return self.epoch * self.steps_per_epoch + self.step

    def autocast(self) -> torch.autocast:
        """The training precision's autocast on the run's device: bf16 where the run trains in it, else off."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.optim.precision == "bf16")

    def training_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` on the run's device, in its training memory format."""
        inputs = inputs.to(self.device, non_blocking=True)
        return inputs.contiguous(memory_format=torch.channels_last) if self.optim.channels_last else inputs


class Extension:
    """A method's work inside the training loop; subclasses override the hooks they need."""

    name: ClassVar[str] = "extension"  # unique among a run's extensions: it keys settings and state in checkpoints
    changes_results: ClassVar[bool] = True  # False (loggers): may differ between a run and its resume
    needs_index: bool = False  # True: the loop sets ``run.batch_index`` before each step

    def settings(self) -> dict[str, Any]:
        """What a resumed run must have in common with the one that wrote the checkpoint."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What this extension has learnt or counted so far, saved in every checkpoint (tensors and plain data)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from the ``state_dict`` of the checkpoint a run resumes from (before ``train_start``)."""

    def train_start(self, run: TrainRun) -> None:
        """Called once before the first epoch trained by this call (a resumed run's state already restored)."""

    def before_forward(self, run: TrainRun, inputs: torch.Tensor) -> None:
        """Called before each training forward."""

    def extra_loss(self, run: TrainRun, inputs: torch.Tensor, outputs: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor | None:
        """A term added to the task loss (inside autocast), or None."""
        return None

    def after_backward(self, run: TrainRun) -> None:
        """Called after ``loss.backward()``, before the optimizer step."""

    def after_optimizer_step(self, run: TrainRun) -> None:
        """Called after each optimizer and schedule step (e.g. to update an average of the weights)."""

    def epoch_end(self, run: TrainRun, row: dict[str, Any]) -> None:
        """Add this extension's columns to the epoch's metrics row (after its last step, before evaluation)."""

    def after_evaluation(self, run: TrainRun, row: dict[str, Any], report: TrafficReport | None) -> None:
        """Called after each epoch, with its complete row (already in ``run.metrics``) and its test report (None
        where ``train.eval_every`` skipped the epoch's evaluation), before the checkpoint is written."""

    def train_end(self, run: TrainRun, report: TrafficReport) -> None:
        """Called once after the last epoch, with the final evaluation."""


class ZebraTraining(Extension):
    """Zebra's recipe with the run's ``zebra`` settings, driven by the loop: an adapter over ``ZebraRecipe``
    (thresholds calibrated to a ramped density, the penalty and its weight schedule)."""

    name = "zebra"

    def __init__(self, section: ZebraSection) -> None:
        self.section = section
        self.recipe: ZebraRecipe | None = None  # built at the first step, when the run's model is known

    def before_forward(self, run: TrainRun, inputs: torch.Tensor) -> None:
        if self.recipe is None:
            self.recipe = zebra_recipe(self.section, run.model, run.steps_per_epoch,
                                       run.optim.epochs * run.steps_per_epoch)
            if run.world.main:
                warn_short_ramp(self.recipe, run.optim.epochs * run.steps_per_epoch)
        self.recipe.last_step = run.global_step - 1  # the loop's count: a resumed run starts at its epoch's first step
        self.recipe.step(inputs)

    def extra_loss(self, run, inputs, outputs, labels):
        assert self.recipe is not None  # built by before_forward, which runs first
        return self.recipe.loss(outputs)

    def epoch_end(self, run: TrainRun, row: dict[str, Any]) -> None:
        assert self.recipe is not None
        row["lam"] = self.recipe.last_lam

    def train_end(self, run: TrainRun, report: TrafficReport) -> None:
        set_penalty(run.model, True)  # the trained model hands back penalties again, as a prepared one does


def warn_short_ramp(recipe: ZebraRecipe, steps: int) -> None:
    """Warn when training ends before the density ramp does: the masks never keep the target density, so
    runs that differ only in ``zebra.density`` train alike."""
    if recipe.density is None or recipe.density_ramp_steps <= steps:
        return
    warnings.warn(f"zebra.density_ramp_steps={recipe.density_ramp_steps} is longer than this training ({steps} "
                  f"steps): its last step recalibrates to keep {_rounded(recipe.target_density(steps - 1))} of the "
                  f"blocks, not "
                  f"zebra.density={_rounded(recipe.density)}; train more epochs or lower zebra.density_ramp_steps",
                  stacklevel=2)


def _rounded(density: float | Mapping[str, float]) -> float | dict[str, float]:
    if isinstance(density, Mapping):
        return {key: round(value, 3) for key, value in density.items()}
    return round(density, 3)


def zebra_recipe(section: ZebraSection, model: nn.Module, steps_per_epoch: int | None = None,
                 total_steps: int | None = None) -> ZebraRecipe:
    """The ``ZebraRecipe`` of a run config's ``zebra`` section for a prepared ``model``."""
    return ZebraRecipe(model, density=section.density, density_ramp_steps=section.density_ramp_steps,
                       calibrate_every=section.calibrate_every, lam=section.lam, lam_epochs=section.lam_epochs,
                       warmup_steps=section.warmup_steps, steps_per_epoch=steps_per_epoch, total_steps=total_steps)


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
    """Knowledge distillation from a trained teacher: an adapter over the recipe's ``Distiller`` (``weight * T^2 *
    KL(teacher || model)`` over logits softened by temperature ``T``, the teacher run frozen on the same batch).

    ``cached``: offline distillation. The teacher's logits for every training image as it is (un-augmented) are
    computed once when training starts, and each step reads its batch's rows: the teacher's forward leaves the
    step, at the price of targets that do not follow the student's augmented views."""

    name = "distillation"

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 4.0,
                 cached: bool = False) -> None:
        self.distiller = Distiller(teacher, weight, temperature)
        self.cached = self.needs_index = cached
        self.targets: torch.Tensor | None = None  # the cached logits, row i for training item i

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"weight": self.distiller.weight, "temperature": self.distiller.temperature}
        if self.cached:  # per batch, as checkpoints written before the setting, is left out
            settings["targets"] = CACHED
        return settings

    def train_start(self, run: TrainRun) -> None:
        if self.cached and self.targets is None:
            started = time.perf_counter()
            self.targets = plain_training_logits(self.distiller.teacher, run)
            if run.world.main:
                print(f"distillation targets: the teacher's logits for {len(self.targets):,} training images, "
                      f"un-augmented, computed once ({time.perf_counter() - started:.1f} s)", flush=True)

    def extra_loss(self, run, inputs, outputs, labels):
        if not self.cached:
            return self.distiller(inputs, outputs)
        if self.targets is None or run.batch_index is None:
            raise ZebraError("cached distillation targets need their table, made when training starts, and each "
                             "batch's indices: train with train(), whose loop calls train_start and sets "
                             "run.batch_index for an extension with needs_index")
        return self.distiller.loss(outputs, self.targets[run.batch_index])


def plain_training_logits(teacher: nn.Module, run: TrainRun) -> torch.Tensor:
    """The logits of ``teacher`` (float32, on the run's device: 4 bytes per training item and class) for each item
    of the run's training set un-augmented, in order, in the run's training precision and memory format, with its
    BatchNorm folded into the convolutions before it (``folded``)."""
    layout = torch.channels_last if run.optim.channels_last else torch.contiguous_format
    model = folded(teacher).to(run.device, memory_format=layout)  # type: ignore[call-overload]  # torch takes both
    plain = build_data(run.config, augment=False)[0]
    table: torch.Tensor | None = None  # allocated at the first batch, once the number of classes is known
    start = 0
    for inputs, _ in make_loader(plain, run.config.data.eval_batch_size, run.config.data, run.device, False, 0):
        with torch.inference_mode(), run.autocast():
            logits = model(run.training_inputs(inputs))
        if table is None:  # outside inference mode: a plain tensor, which training reads
            table = torch.empty(len(plain), logits.shape[1], device=run.device)
        table[start:start + len(logits)] = logits
        start += len(logits)
    if table is None:
        raise ZebraError("cached distillation targets need training images: the training set is empty")
    return table


def folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each BatchNorm that follows a convolution folded into it
    (``torch.fx``'s inference fusion): the same function up to rounding, about a quarter faster on the main job's
    teacher; ``model`` itself where torch.fx cannot trace it."""
    try:
        return fuse(model.eval())
    except (TraceError, TypeError, RuntimeError, NotImplementedError) as error:  # what symbolic tracing raises
        warnings.warn(f"torch.fx cannot trace the teacher ({type(error).__name__}: {error}); its BatchNorm stays "
                      "unfolded, and the pass over the training set takes longer", stacklevel=2)
        return model.eval()


def zebra_extensions(section: ZebraSection) -> list[Extension]:
    """What training with Zebra adds: its recipe (threshold calibration when a density is set, the penalty)."""
    return [ZebraTraining(section)]


def slimming(config: RunConfig) -> list[Extension]:
    """Network Slimming's sparsity training with the run's ``slim`` settings."""
    return [BnSparsity(config.slim.s, config.slim.exclude)]


def distillation(config: RunConfig, teacher: nn.Module | None) -> list[Extension]:
    """Distillation from ``teacher`` with the run's ``distill`` settings (none while its weight is 0, when the
    teacher may be None)."""
    d = config.distill
    if not d.weight:
        return []
    if teacher is None:
        raise ValueError("distillation with a weight needs its teacher model")
    return [Distillation(teacher, d.weight, d.temperature, d.targets == CACHED)]


bind_extensions(SPARSE_STAGE, slimming)  # the method registry's entry for Network Slimming's sparsity stage
