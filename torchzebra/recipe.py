"""Zebra's training recipe as one object that any training loop drives, shaped like a learning-rate scheduler.

Built from a prepared model and the recipe's settings, a ``ZebraRecipe`` is called twice per training step:
``step(inputs)`` before the forward (thresholds recalibrated on the batch to a kept-block density that ramps
down from 1, penalties off where their weight is 0) and ``loss(outputs)`` after it (``lam *
zero_block_loss(model)``, plus distillation from a teacher). ``state_dict``/``load_state_dict`` resume it exactly.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import number, whole
from .analysis.calibrate import calibrate, validate_densities
from .analysis.regularizer import zero_block_loss
from .core import is_channels_last
from .errors import ZebraError
from .nn import model_device, plain_model, prepared_module, set_penalty


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


class Distiller:
    """Knowledge distillation from a trained teacher (Hinton et al. 2015): ``weight * T^2 * KL(teacher || student)``
    over logits softened by temperature ``T``; the teacher is put in eval mode, frozen, and run without gradients (a
    prepared teacher as its plain model: its Zebra layers would only cost time in every forward)."""

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 4.0) -> None:
        if not isinstance(teacher, nn.Module):
            raise ZebraError(f"teacher={type(teacher).__name__} is invalid: use a trained nn.Module (or None)")
        self.weight = _number(weight, "weight")
        self.temperature = _number(temperature, "temperature", positive=True)
        self.teacher = plain_model(teacher).eval().requires_grad_(False)
        self._placed: tuple[torch.device, torch.memory_format] | None = None  # where the teacher runs now

    def __call__(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """The distillation term for the student's ``outputs`` (logits) on ``inputs``."""
        return self.loss(outputs, self.logits(inputs))

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on ``inputs``, in inference mode, in the precision of the caller's autocast and
        the memory format of ``inputs``."""
        layout = torch.channels_last if is_channels_last(inputs) else torch.contiguous_format
        if (inputs.device, layout) != self._placed:  # moved once, on the first batch (and again if they change)
            self.teacher.to(inputs.device, memory_format=layout)  # type: ignore[call-overload]  # torch takes both
            self._placed = (inputs.device, layout)
        with torch.inference_mode():
            target = self.teacher(inputs)
        return target.clone()  # a plain tensor, usable outside inference mode

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The distillation term for the student's ``outputs`` against the teacher's logits ``target``."""
        return self.weight * distillation_loss(outputs, target, self.temperature)


@dataclass(eq=False)
class ZebraRecipe:
    """Zebra's recipe for any training loop: call ``step(inputs)`` before each training forward and add
    ``loss(outputs)`` to the task loss. The schedule's settings have the names and defaults of the run config's
    ``zebra`` section.

    ``density`` (a fraction, or ``{name-pattern: fraction}``) recalibrates thresholds at the first step of every
    epoch, every ``calibrate_every`` steps and at the last of ``total_steps`` (when given: however short the
    training, the model ends at its schedule's density), to a target that falls from 1 over
    ``density_ramp_steps`` (cubic); None keeps the thresholds as they are. The penalty weight is ``lam`` (or
    ``lam_epochs[epoch]``, the last repeating) times a linear warm-up over ``warmup_steps``. ``steps_per_epoch``
    (e.g. ``len(loader)``) places the epoch boundaries. A ``teacher`` adds ``distill_weight * T^2 * KL`` at
    ``temperature`` T.
    """

    model: nn.Module = field(repr=False)
    _: KW_ONLY
    density: float | Mapping[str, float] | None = None
    density_ramp_steps: int = 0
    calibrate_every: int = 0
    lam: float = 0.0
    lam_epochs: Sequence[float] | None = None
    warmup_steps: int = 0
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    teacher: nn.Module | None = field(default=None, repr=False)
    distill_weight: float = 1.0
    temperature: float = 4.0
    last_step: int = field(default=-1, init=False)  # the step of the last ``step()`` call; -1 before the first
    _distiller: Distiller | None = field(default=None, init=False, repr=False)
    _inputs: torch.Tensor | None = field(default=None, init=False, repr=False)  # the batch the teacher reads

    def __post_init__(self) -> None:
        self.model = prepared_module(self.model, "ZebraRecipe")  # a torch.compile wrapper's eager module
        validate_schedule(self.density, self.density_ramp_steps, self.calibrate_every, self.lam, self.lam_epochs,
                          self.warmup_steps)
        for name in ("steps_per_epoch", "total_steps"):
            if getattr(self, name) is not None:
                _count(getattr(self, name), name, least=1)
        if self.lam_epochs is not None and self.steps_per_epoch is None:
            raise ZebraError("lam_epochs needs steps_per_epoch (e.g. len(loader)) to know where each epoch starts")
        _number(self.distill_weight, "distill_weight")
        _number(self.temperature, "temperature", positive=True)
        if self.teacher is not None:
            self._distiller = Distiller(self.teacher, self.distill_weight, self.temperature)

    def target_density(self, step: int) -> float | dict[str, float]:
        """The kept-block fraction (or fraction per pattern) that ``step`` calibrates to."""
        ramp_steps = self.density_ramp_steps
        left = max(0.0, 1.0 - step / ramp_steps) if ramp_steps else 0.0
        ramp = lambda target: target + (1.0 - target) * left**3  # noqa: E731
        if isinstance(self.density, Mapping):
            return {p: ramp(v) for p, v in self.density.items()}
        return ramp(self.density)

    def penalty_weight(self, step: int) -> float:
        """Lambda at ``step``: the epoch's base weight times the warm-up ramp."""
        epoch = step // self.steps_per_epoch if self.steps_per_epoch else 0
        base = self.lam_epochs[min(epoch, len(self.lam_epochs) - 1)] if self.lam_epochs else self.lam
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return base * ramp

    @property
    def last_lam(self) -> float:
        """The penalty weight of the current step (0 before the first)."""
        return self.penalty_weight(self.last_step) if self.last_step >= 0 else 0.0

    def step(self, inputs: torch.Tensor) -> None:
        """Begin the next training step on the batch ``inputs``, before its forward: recalibrate the thresholds
        when due, and switch the layers' penalty off where its weight is 0 (nothing would add it to the loss)."""
        self.last_step += 1
        within = self.last_step % self.steps_per_epoch if self.steps_per_epoch else self.last_step
        set_penalty(self.model, self.last_lam != 0)
        if self.density is not None and self._calibration_due(within):
            calibrate(self.model, [inputs], self.target_density(self.last_step))
        self._inputs = inputs if self._distiller is not None else None

    def _calibration_due(self, within: int) -> bool:
        """Whether this step recalibrates: an epoch's first step, every ``calibrate_every``, the training's last."""
        scheduled = within == 0 or (self.calibrate_every and within % self.calibrate_every == 0)
        return bool(scheduled) or self.last_step + 1 == self.total_steps

    def loss(self, outputs: torch.Tensor | None = None) -> torch.Tensor:
        """The extra loss term of this step, after its forward: ``lam * zero_block_loss(model)`` plus, with a
        teacher, the distillation of ``outputs`` (the logits); a zero when neither applies."""
        if self.last_step < 0:
            raise RuntimeError("ZebraRecipe.loss() before step(): call step(inputs) before each training forward")
        terms = [self.last_lam * zero_block_loss(self.model)] if self.last_lam else []
        if self._distiller is not None:
            if outputs is None:
                raise ZebraError("ZebraRecipe.loss(outputs) needs the model's outputs (logits) when it has a teacher")
            assert self._inputs is not None  # kept by step(), which ran (last_step >= 0)
            terms.append(self._distiller(self._inputs, outputs))
        return sum(terms[1:], terms[0]) if terms else torch.zeros((), device=model_device(self.model))

    def state_dict(self) -> dict[str, Any]:
        """Where the recipe stands (the thresholds are buffers of the model: they travel with its state_dict)."""
        return {"last_step": self.last_step, "settings": self._settings()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from ``state_dict``; one saved with other settings is a ``ValueError`` naming them."""
        saved = state_dict["settings"]
        differ = [f"{k}={saved[k]!r} (here {v!r})" for k, v in self._settings().items() if k in saved and saved[k] != v]
        if differ:
            raise ZebraError("ZebraRecipe.load_state_dict: the state was saved with other settings: "
                             f"{', '.join(differ)}; build the recipe with the saved settings to resume")
        self.last_step = int(state_dict["last_step"])

    def _settings(self) -> dict[str, Any]:
        density = dict(self.density) if isinstance(self.density, Mapping) else self.density
        return {"density": density, "density_ramp_steps": self.density_ramp_steps,
                "calibrate_every": self.calibrate_every, "lam": self.lam,
                "lam_epochs": list(self.lam_epochs) if self.lam_epochs is not None else None,
                "warmup_steps": self.warmup_steps, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "teacher": self.teacher is not None, "distill_weight": self.distill_weight,
                "temperature": self.temperature}


def validate_schedule(density: object, density_ramp_steps: object, calibrate_every: object, lam: object,
                      lam_epochs: object, warmup_steps: object) -> None:
    """Check the recipe's schedule settings (the run config's ``zebra`` section checks them when it is read);
    a bad one is a ``ValueError`` naming it."""
    if density is not None:
        validate_densities(density, "density")
    for name, value in (("density_ramp_steps", density_ramp_steps), ("calibrate_every", calibrate_every),
                        ("warmup_steps", warmup_steps)):
        _count(value, name, least=0)
    _number(lam, "lam")
    if lam_epochs is not None:
        if isinstance(lam_epochs, (str, bytes)) or not isinstance(lam_epochs, Sequence) or not lam_epochs:
            raise ZebraError(f"lam_epochs={lam_epochs!r} is invalid: use a list of numbers, one per epoch")
        for epoch, value in enumerate(lam_epochs):
            _number(value, f"lam_epochs[{epoch}]")


def _count(value: object, name: str, least: int) -> int:
    return whole(value, name, least=least)


def _number(value: object, name: str, positive: bool = False) -> float:
    return number(value, name, least=None if positive else 0, above=0 if positive else None)
