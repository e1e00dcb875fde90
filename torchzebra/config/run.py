"""Run configuration: YAML presets shipped with the package, a user file, and ``key=value`` overrides.

Every section is a dataclass of ``sections``; unknown keys are an error that lists the known ones, so a typo in
a config never passes silently.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .._checks import is_number, is_whole
from .._io import atomic_write_text
from .._numbers import yaml_numbers
from .errors import ConfigError, SettingError
from .presets import PRESETS
from .sections import (
    SAME_RESULTS,
    DataSection,
    DistillSection,
    ModelSection,
    OptimSection,
    RunSection,
    Section,
    SlimSection,
    SweepSection,
    ZebraSection,
)
from .text import parse_assignment, read_config_file, read_yaml


@dataclass
class RunConfig:
    seed: int = 0
    device: str = field(default="auto", metadata=SAME_RESULTS)  # auto | cpu | cuda | cuda:N
    bits: int = 8
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: OptimSection = field(default_factory=OptimSection)
    finetune: OptimSection = field(default_factory=lambda: OptimSection(epochs=2, lr=0.01, schedule="cosine"))
    zebra: ZebraSection = field(default_factory=ZebraSection)
    slim: SlimSection = field(default_factory=SlimSection)
    distill: DistillSection = field(default_factory=DistillSection)
    run: RunSection = field(default_factory=RunSection)
    sweep: SweepSection = field(default_factory=SweepSection)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON-ready: tuples become lists) that ``from_dict`` reads back."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _build(cls, values: Any, path: str):
    """An instance of the section class ``cls`` from a mapping: unknown keys and values of the wrong type
    are a ConfigError naming the key; so are the errors of building the section and of its ``check``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = f"in {path} " if path else ""
        raise ConfigError(f"unknown setting(s) {where}{unknown}: known settings are {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(hints[key]):
            value = _build(hints[key], value, where)
        elif not matches(value, hints[key]):
            if not matches(yaml_numbers(value), hints[key]):
                raise ConfigError(f"{where}={value!r} is invalid: expected {describe(hints[key])}")
            value = yaml_numbers(value)  # `1e-3` or `1.0e9`, which YAML reads as text
        kwargs[key] = value
    try:
        built = cls(**kwargs)
        if isinstance(built, Section):
            built.check()
        return built
    except SettingError as error:
        raise ConfigError(f"{path}.{error}") from error
    except ValueError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from error


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain (YAML) value fits the type annotation ``hint`` (an int is a valid float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arm) for arm in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return is_number(value)  # finite: no setting means anything by .inf or .nan
    if hint is int:
        return is_whole(value)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(matches(item, args[0] if args else Any) for item in value)
    if origin in (dict, collections.abc.Mapping):
        key_type, value_type = args or (Any, Any)
        return isinstance(value, dict) and all(matches(k, key_type) and matches(v, value_type)
                                               for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: Any) -> str:
    """An annotation in words: ``int | None`` -> ``an int or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arm) for arm in args)
    if hint is type(None) or hint is None:
        return "null"
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list (each item {describe(args[0])})" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return f"a mapping of {describe(args[0])} to {describe(args[1])}" if args else "a mapping"
    names = {bool: "a bool (true/false)", int: "an int", float: "a finite number", str: "a string", Any: "any value"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def from_dict(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from a nested dict; unknown keys and invalid values raise ConfigError before any work."""
    return _build(RunConfig, values, "")


def changed_settings(saved: dict[str, Any], current: Any, prefix: str = "") -> list[str]:
    """The settings that can change results whose value in ``saved`` (plain values, maybe written by an earlier
    version: settings added since take defaults) differs from ``current`` (a RunConfig, or one of its sections
    under ``prefix``), as ``key=saved (here current)``; settings marked ``SAME_RESULTS`` are not compared."""
    try:
        old = from_dict(saved) if isinstance(current, RunConfig) else _build(type(current), saved, prefix)
    except ConfigError as error:
        return [f"{prefix or 'config'} unreadable ({error})"]
    return _differences(old, current, f"{prefix}." if prefix else "")


def stage_differences(saved: dict[str, Any], current: RunConfig, masked: bool, baseline: bool = False) -> list[str]:
    """``changed_settings`` of a trained stage's saved config against ``current``. An unmasked stage ignores the
    Zebra settings but the traced structure (``zebra.leaf_modules``): they shape only masks, penalties and what is
    measured, and a finished stage is measured again; so new Zebra settings reuse it. A ``baseline`` (unmasked,
    trained from scratch with ``train``'s settings and no extension) ignores ``finetune`` and ``distill`` too:
    they shape only the stages after it."""
    differ = changed_settings(saved, current)
    if masked:
        return differ
    ignored = ("zebra.", "finetune.", "distill.") if baseline else ("zebra.",)
    return [d for d in differ if not d.startswith(ignored) or d.startswith("zebra.leaf_modules=")]


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    """``changed_settings`` of two instances of one section class."""
    found = []
    for item in dataclasses.fields(new):
        if not item.metadata.get("changes_results", True):
            continue
        before, after = getattr(old, item.name), getattr(new, item.name)
        if dataclasses.is_dataclass(after):
            found += _differences(before, after, f"{prefix}{item.name}.")
        elif _plain(before) != _plain(after):
            found.append(f"{prefix}{item.name}={_plain(before)!r} (here {_plain(after)!r})")
    return found


MERGED_SETTINGS = {("model", "options")}  # settings whose mappings merge key by key, as sections do


def _merge(base: dict, update: dict, path: tuple[str, ...] = ()) -> dict:
    """``update`` on top of ``base``: sections and ``MERGED_SETTINGS`` merge key by key; any other value replaces,
    a per-site mapping such as ``zebra.density`` whole (its patterns are ordered: the first match wins)."""
    out = dict(base)
    for key, value in update.items():
        where = (*path, key)
        merges = isinstance(value, dict) and isinstance(out.get(key), dict) and (
            len(where) == 1 or where in MERGED_SETTINGS)
        out[key] = _merge(out[key], value, where) if merges else value
    return out


def _layer(values: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``_merge`` of a config file or one override, with the model.options rules of the note above
    ``sections.ModelSection``."""
    model, below = update.get("model"), values.get("model", {})
    if isinstance(model, dict) and isinstance(below, dict):
        clears = "options" in model and model["options"] in (None, {})
        if clears or ("name" in model and model["name"] != below.get("name")):
            values = {**values, "model": {**below, "options": {}}}
        if clears:
            update = {**update, "model": {**model, "options": {}}}
    return _merge(values, update)


def preset(name: str) -> dict[str, Any]:
    """The settings of a preset shipped with the package."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown: use one of {', '.join(PRESETS)}")
    text = resources.files("torchzebra.config.presets").joinpath(f"{name}.yaml").read_text()
    return read_yaml(text, f"preset {name}")


def with_value(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of nested settings with the dotted ``key`` set to ``value``."""
    update: dict[str, Any] = {}
    node = update
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return _layer(values, update)


def apply_override(values: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply ``section.key=value`` (value parsed as YAML) to a nested dict of settings."""
    return with_value(values, *parse_assignment(assignment))


def load_config(preset_name: str | None = "quick", file: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset, then a YAML file, then overrides, each on top of the last; validated as a RunConfig."""
    values: dict[str, Any] = preset(preset_name) if preset_name else {}
    if file is not None:
        values = _layer(values, read_config_file(file))
    for assignment in overrides:
        values = apply_override(values, assignment)
    return from_dict(values)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
