"""The run configuration's sections: one dataclass each, its types checked from the annotations when it is read
(``run.load_config``) and its values in its one ``check`` hook, so a bad setting fails at start-up in one line.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal

from .._checks import choice, number, whole
from ..data import check_name
from ..nn.config import ZebraConfig
from ..recipe import validate_schedule
from ..results.methods import run_methods
from .errors import SettingError

SCHEDULES = ("onecycle", "cosine", "constant")
# Field metadata of a setting that changes how a run executes or logs, not what it trains: a resume or a sweep rerun
# may change it (``changed_settings`` skips it).
SAME_RESULTS = types.MappingProxyType({"changes_results": False})


class Section:
    """A section of the run config: the loader calls ``check`` once the section is built from a mapping."""

    def check(self) -> None:
        """Check the values the annotations cannot (ranges, names); a section of types alone has none."""


# model.options are the keyword arguments of the model's builder (e.g. width, stem of our resnet18). Like every
# mapping they merge key by key as the preset, the config file and each --set are layered, except that
# `options: {}` or `null` clears them, and a layer that changes model.name drops the options beneath it: they
# were for another model (give the new model's options in the same file or in a later --set).
@dataclass
class ModelSection(Section):
    """The network: ``name`` is one of ``models.OWN``, ``torchvision:<name>`` or ``timm:<name>``, ``options`` its
    builder's arguments."""

    name: str = "resnet18"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection(Section):
    """The ``data`` section of a run: which data set, where, at what size, and how it is batched."""

    name: str = "fashion-mnist"
    root: str | None = None
    size: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    workers: int = field(default=0, metadata=SAME_RESULTS)
    loader: Literal["auto", "workers", "device"] = "auto"  # device: in-memory and synthetic batches made on the
    # device (one gather, per-batch augmentation); workers: a DataLoader; auto: device on CUDA, else workers
    augment: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    classes: int = 10  # synthetic only
    channels: int = 3  # synthetic only
    length: int = 1024  # synthetic only

    def check(self) -> None:
        """The data set is one that ``data.build_datasets`` knows; sizes and counts are positive."""
        check_name(self.name)
        for name in ("batch_size", "eval_batch_size", "classes", "channels", "length"):
            whole(getattr(self, name), name, least=1, error=SettingError)
        for name in ("size", "train_subset", "test_subset"):
            if getattr(self, name) is not None:
                whole(getattr(self, name), name, least=1, expected="use a whole number >= 1, or null for all",
                      error=SettingError)
        whole(self.workers, "workers", least=0, expected="use a whole number of loader processes >= 0",
              error=SettingError)


@dataclass
class OptimSection(Section):
    epochs: int = 3
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | constant
    label_smoothing: float = 0.0
    max_steps: int | None = None  # per epoch; for throughput runs
    # The training step's precision and memory format (evaluation and counting always run fp32, plain layout);
    # auto: bf16 autocast and channels_last where the device has native bf16 (training/precision.py), else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun
    tensorboard: bool = field(default=False, metadata=SAME_RESULTS)  # also log every epoch to RUN_DIR/tensorboard
    # (pip install 'torchzebra[tensorboard]')
    # torch.compile the training forward/backward; null: on a GPU only (see docs/PERFORMANCE.md)
    compile: bool | None = None
    eval_every: int = field(default=1, metadata=SAME_RESULTS)  # evaluate on the test split after every N-th epoch
    # and after the last; 0: after the last only (each evaluation is a pass over the whole test split)

    def check(self) -> None:
        """The schedule is one that ``training.optim.build_scheduler`` builds; ``eval_every`` is a count."""
        choice(self.schedule, "schedule", SCHEDULES, error=SettingError)
        whole(self.eval_every, "eval_every", least=0, error=SettingError,
              expected="use a whole number of epochs >= 0 (0: evaluate after the last epoch only)")
        whole(self.epochs, "epochs", least=0, error=SettingError)
        if self.max_steps is not None:
            whole(self.max_steps, "max_steps", least=1, expected="use a whole number of steps >= 1, or null for "
                  "whole epochs", error=SettingError)
        number(self.lr, "lr", least=0, error=SettingError)
        number(self.weight_decay, "weight_decay", least=0, error=SettingError)
        number(self.momentum, "momentum", least=0, below=1, error=SettingError)
        number(self.label_smoothing, "label_smoothing", least=0, below=1, error=SettingError)


@dataclass(frozen=True)
class ZebraSection(ZebraConfig, Section):
    """The ``zebra`` section: every ``ZebraConfig`` setting (what ``prepare`` instruments and how, checked as
    ``ZebraConfig`` is built) plus how training uses it. ``layer_config`` is the one mapping from this section to
    ``prepare``'s config."""

    enabled: bool = False
    lam: float = 0.0  # weight of zero_block_loss
    lam_epochs: list[float] | None = None  # per-epoch lambda (the last value repeats); overrides lam
    warmup_steps: int = 0  # lambda ramps linearly from 0 over these steps
    density: float | dict[str, float] | None = None  # threshold policy: None keeps the fixed thresholds; a fraction
    # of blocks to keep (or {pattern: fraction}) calibrates every layer's threshold to it during training
    density_ramp_steps: int = 0  # the kept fraction falls from 1 to `density` over these steps (cubic)
    calibrate_every: int = 0  # recalibrate every N steps (0: at the start of each epoch only)

    def check(self) -> None:
        """The training settings are ones ``ZebraRecipe`` takes (its own check, so both say the same)."""
        validate_schedule(self.density, self.density_ramp_steps, self.calibrate_every, self.lam, self.lam_epochs,
                          self.warmup_steps)

    def layer_config(self, enabled: bool) -> ZebraConfig:
        """The ZebraConfig of ``prepare``; with Zebra off every site is inactive (measured only)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ZebraConfig)}
        return ZebraConfig(**{**values, "include": values["include"] if enabled else ()})


@dataclass
class SlimSection(Section):
    """Network Slimming: BN-scale sparsity ``s`` while training, then remove ``ratio`` of the channels."""

    s: float = 1e-5  # L1 weight on BatchNorm scales (Liu et al.: 1e-4 for VGG, 1e-5 for ResNets)
    ratio: float = 0.4  # fraction of the BatchNorm channels to remove
    min_channels: int = 1  # floor: every layer keeps at least this many channels
    exclude: list[str] = field(default_factory=list)  # BatchNorm name patterns never pruned

    def check(self) -> None:
        """The ratio and floor are ones ``slim.plan`` takes (its own checks), and the sparsity weight is >= 0."""
        from ..slim import validate_min_channels, validate_ratio

        try:
            validate_ratio(self.ratio)
            validate_min_channels(self.min_channels)
        except ValueError as error:
            raise SettingError(str(error)) from error
        number(self.s, "s", least=0, expected="the sparsity weight is a number >= 0, e.g. 1e-5", error=SettingError)


CACHED = "cached"
DISTILL_TARGETS = ("batch", CACHED)  # where the teacher's logits come from: each batch, or a cache made once


@dataclass
class DistillSection(Section):
    """Knowledge distillation from the dense baseline while a Zebra model trains (off while ``weight`` is 0)."""

    weight: float = 0.0  # weight of the distillation term beside the task loss
    temperature: float = 4.0  # softens both models' logits
    # batch: the teacher runs on every training batch as the student sees it (augmented); cached: offline, its
    # logits for each training image un-augmented are computed once when training starts and read every step
    targets: str = "batch"

    def check(self) -> None:
        """A finite weight >= 0, a finite temperature > 0 (what ``recipe.Distiller`` takes) and a known kind of
        targets, checked when the config is read, before any training."""
        number(self.weight, "weight", least=0, expected="use a finite number >= 0 (0: no distillation)",
               error=SettingError)
        number(self.temperature, "temperature", above=0, expected="use a finite number > 0, e.g. 4", error=SettingError)
        choice(self.targets, "targets", DISTILL_TARGETS, error=SettingError)


@dataclass
class RunSection(Section):
    """``zebra run``: which Zebra method the main job trains beside the dense baseline."""

    method: str = "zebra"  # zebra: fine-tuned from the baseline (finetune section); zebra-scratch: the train section

    def check(self) -> None:
        """The method is one ``zebra run`` trains."""
        choice(self.method, "method", run_methods(), error=SettingError)


@dataclass
class SweepSection(Section):
    """``zebra sweep``: every method fine-tuned at every point of the grid (the product of its value lists)."""

    methods: list[str] = field(default_factory=lambda: ["zebra"])  # names of results.methods.sweep_methods()
    grid: dict[str, Any] = field(default_factory=dict)  # {"zebra.lam": [0.01, 0.02], "zebra.block_size": [2, 4]}
    points: list[dict[str, Any]] = field(default_factory=list)  # extra points: [{"method": "zebra", "zebra.lam": 0.1}]
