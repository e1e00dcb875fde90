"""Run configuration: YAML presets shipped with the package, a user file, and ``key=value`` overrides.

Every section is a dataclass; unknown keys are an error that lists the known ones, so a typo in a
config never passes silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .._io import atomic_write_text

PRESETS = ("quick", "paper")
SCHEDULES = ("onecycle", "cosine", "constant")


class ConfigError(ValueError):
    """A configuration file, preset or override is invalid; the message says which and how to fix it."""


@dataclass
class ModelSection:
    name: str = "resnet18"
    options: dict[str, Any] = field(default_factory=dict)  # e.g. width, stem


@dataclass
class DataSection:
    name: str = "fashion-mnist"
    root: str | None = None
    size: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 512
    workers: int = 0
    augment: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    classes: int = 10  # synthetic only
    channels: int = 3  # synthetic only
    length: int = 1024  # synthetic only


@dataclass
class OptimSection:
    epochs: int = 3
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | constant
    label_smoothing: float = 0.0
    max_steps: int | None = None  # per epoch; for throughput runs
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun


@dataclass
class ZebraSection:
    enabled: bool = False
    lam: float = 0.0  # weight of zero_block_loss
    lam_epochs: list[float] | None = None  # per-epoch lambda (the last value repeats); overrides lam
    warmup_steps: int = 0  # lambda ramps linearly from 0 over these steps
    penalty: str = "group_lasso"
    block_size: Any = 4
    score: str = "mean"
    threshold: Any = 0.0
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    density: Any = None  # threshold policy: None keeps the fixed thresholds; a fraction of blocks to keep
    # (or {pattern: fraction}) calibrates every layer's threshold to it during training
    density_ramp_steps: int = 0  # the kept fraction falls from 1 to `density` over these steps (cubic)
    calibrate_every: int = 0  # recalibrate every N steps (0: at the start of each epoch only)


@dataclass
class SlimSection:
    """Network Slimming: BN-scale sparsity ``s`` while training, then remove ``ratio`` of the channels."""

    s: float = 1e-5  # L1 weight on BatchNorm scales (Liu et al.: 1e-4 for VGG, 1e-5 for ResNets)
    ratio: float = 0.4  # fraction of the BatchNorm channels to remove
    min_channels: int = 1  # floor: every layer keeps at least this many channels
    exclude: list[str] = field(default_factory=list)  # BatchNorm name patterns never pruned


@dataclass
class SweepSection:
    """``zebra sweep``: every method fine-tuned at every point of the grid (the product of its value lists)."""

    methods: list[str] = field(default_factory=lambda: ["zebra"])  # zebra | zebra-scratch | l1 | slim | slim-zebra
    grid: dict[str, Any] = field(default_factory=dict)  # {"zebra.lam": [0.01, 0.02], "zebra.block_size": [2, 4]}
    points: list[dict[str, Any]] = field(default_factory=list)  # extra points: [{"method": "zebra", "zebra.lam": 0.1}]


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bits: int = 8
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: OptimSection = field(default_factory=OptimSection)
    finetune: OptimSection = field(default_factory=lambda: OptimSection(epochs=2, lr=0.01, schedule="cosine"))
    zebra: ZebraSection = field(default_factory=ZebraSection)
    slim: SlimSection = field(default_factory=SlimSection)
    sweep: SweepSection = field(default_factory=SweepSection)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON-ready) that ``from_dict`` reads back."""
        return dataclasses.asdict(self)


def _build(cls, values: Any, path: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = f"in {path} " if path else ""
        raise ConfigError(f"unknown setting(s) {where}{unknown}: known settings are {sorted(known)}")
    kwargs = {}
    defaults = cls()
    for key, value in values.items():
        default, where = getattr(defaults, key), f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, where)
        elif known[key].type != "Any":  # Any fields (block_size, threshold, density) are checked by _validate
            _check_type(default, value, where)
        kwargs[key] = value
    return cls(**kwargs)


def _check_type(default: Any, value: Any, where: str) -> None:
    """Values must have their default's type (an int is a valid float); None defaults accept anything."""
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,)}
    allowed = expected.get(type(default))
    if allowed is None or (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        if allowed is not None:
            raise ConfigError(f"{where}={value!r} is invalid: expected a {type(default).__name__} like {default!r}")


def from_dict(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from a nested dict; unknown keys and invalid values raise ConfigError before any work."""
    config = _build(RunConfig, values, "")
    _validate(config)
    return config


def _validate(config: RunConfig) -> None:
    """Check the values that only deep code would otherwise reject, so a typo fails at start-up."""
    from .. import ZebraConfig  # the core's own validation of block sizes, scores, thresholds, penalties
    from ..calibrate import validate_density

    z = config.zebra
    try:
        ZebraConfig(block_size=z.block_size, score=z.score, threshold=z.threshold, penalty=z.penalty,
                    include=tuple(z.include), exclude=tuple(z.exclude))
        if z.density is not None:
            for pattern, value in (z.density.items() if isinstance(z.density, dict) else [("*", z.density)]):
                validate_density(value, f"zebra.density[{pattern!r}]")
    except ValueError as error:
        raise ConfigError(f"zebra: {error}") from error
    if z.lam_epochs is not None and (
        not isinstance(z.lam_epochs, list) or not z.lam_epochs
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in z.lam_epochs)
    ):
        raise ConfigError(f"zebra.lam_epochs={z.lam_epochs!r} is invalid: use a list of numbers, one per epoch")
    from ..slim import validate_min_channels, validate_ratio

    try:
        validate_ratio(config.slim.ratio)
        validate_min_channels(config.slim.min_channels)
    except ValueError as error:
        raise ConfigError(f"slim.{error}") from error
    if not config.slim.s >= 0:
        raise ConfigError(f"slim.s={config.slim.s!r} is invalid: the sparsity weight is a number >= 0, e.g. 1e-5")
    for name in ("train", "finetune"):
        schedule = getattr(config, name).schedule
        if schedule not in SCHEDULES:
            raise ConfigError(f"{name}.schedule={schedule!r} is invalid: use one of {', '.join(SCHEDULES)}")


def same_settings(saved: dict[str, Any], config: RunConfig) -> bool:
    """Whether settings saved by an earlier version equal ``config`` (sections added since take defaults)."""
    try:
        return from_dict(saved).to_dict() == config.to_dict()
    except ConfigError:
        return False


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(text: str, origin: str) -> dict:
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{origin} must hold a mapping of settings, got {type(values).__name__}")
    return values


def preset(name: str) -> dict[str, Any]:
    """The settings of a preset shipped with the package."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown: use one of {', '.join(PRESETS)}")
    text = resources.files("torchzebra.configs").joinpath(f"{name}.yaml").read_text()
    return _read_yaml(text, f"preset {name}")


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, value parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is invalid: write section.key=value, e.g. train.epochs=5")
    return key.strip(), _read_yaml(f"v: {raw}", f"the value of override {assignment!r}")["v"]


def with_value(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of nested settings with the dotted ``key`` set to ``value``."""
    update: dict[str, Any] = {}
    node = update
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return _merge(values, update)


def apply_override(values: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply ``section.key=value`` (value parsed as YAML) to a nested dict of settings."""
    return with_value(values, *parse_assignment(assignment))


def load_config(preset_name: str | None = "quick", file: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset, then a YAML file, then overrides, each on top of the last; validated as a RunConfig."""
    values: dict[str, Any] = preset(preset_name) if preset_name else {}
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
        values = _merge(values, _read_yaml(text, str(path)))
    for assignment in overrides:
        values = apply_override(values, assignment)
    return from_dict(values)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
