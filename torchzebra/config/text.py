"""Reading settings as text: a YAML file or preset, and ``section.key=value`` overrides. Torch-free, so the command
line refuses an unreadable config file or a malformed override before it loads torch; what the values may be is
checked when the run config is built (``run.from_dict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def read_yaml(text: str, origin: str) -> dict[str, Any]:
    """The mapping of settings in YAML ``text`` (empty: none); anything else is a ConfigError naming ``origin``."""
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin} is not valid YAML: {_one_line(error)}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{origin} must hold a mapping of settings, got {type(values).__name__}")
    return values


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: what is wrong and where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def read_config_file(file: str | Path) -> dict[str, Any]:
    """The settings of a YAML config file; a missing or unreadable file is a ConfigError."""
    path = Path(file)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    return read_yaml(text, str(path))


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, value parsed as YAML)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is invalid: write section.key=value, e.g. train.epochs=5")
    value = read_yaml(f"v: {raw}", f"the value of override {assignment!r}")["v"]
    glued = _glued_keys(value)
    if glued:
        raise ConfigError(f"override {assignment!r} is invalid: YAML reads {glued[0]!r} as a key without a value; "
                          "write a space after each colon, e.g. model.options={stem: cifar, width: 8}")
    return key.strip(), value


def _glued_keys(value: Any) -> list[str]:
    """The keys of a mapping (at any depth) that YAML read from ``key:value`` without a space: text with a colon
    and no value."""
    if isinstance(value, dict):
        return [k for k, v in value.items() if v is None and isinstance(k, str) and ":" in k] + [
            k for v in value.values() for k in _glued_keys(v)]
    if isinstance(value, list):
        return [k for item in value for k in _glued_keys(item)]
    return []
