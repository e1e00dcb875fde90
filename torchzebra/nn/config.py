"""ZebraConfig: what ``prepare`` instruments and how, globally or per call site by name pattern."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Mapping, Union

from .._checks import number
from ..core import BlockSize, validate_block_size, validate_penalty, validate_score
from ..errors import ZebraError

DEFAULT_BLOCK_SIZE = 4
PerSite = Union[Any, Mapping[str, Any]]  # one value for every site, or {name-pattern: value}


@dataclass(frozen=True)
class SiteConfig:
    """The resolved settings of one call site."""

    block_size: BlockSize
    threshold: float
    weight: float
    active: bool  # mask applied and regularised; an inactive site is still measured


def _non_negative(allowed: str):
    """A validator of finite numbers >= 0 whose error ends with ``allowed``."""

    def check(value: object, name: str) -> float:
        return number(value, name, least=0, expected=f"use {allowed}")

    return check


_validate_threshold = _non_negative("a finite number >= 0 (0 keeps every non-zero block)")
_validate_weight = _non_negative("a finite layer weight >= 0")


def _validate_patterns(value: object, name: str) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else value
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise ZebraError(f"{name}={value!r} is invalid: use a list of module-name patterns such as ['layer1.*']")
    return tuple(patterns)


def _per_site(value: PerSite, name: str, check) -> PerSite:
    """Validate a value given once or as {pattern: value}; return it with dict values checked."""
    if isinstance(value, Mapping):
        for pattern, item in value.items():
            if not isinstance(pattern, str):
                raise ZebraError(f"{name} pattern {pattern!r} is invalid: patterns are strings such as 'layer1.*'")
            check(item, f"{name}[{pattern!r}]")
        return dict(value)
    return check(value, name)


def resolve_per_site(value: PerSite, site: str, default: Any) -> Any:
    """The value for ``site``: the first matching pattern of a mapping (else ``default``), or the value."""
    if not isinstance(value, Mapping):
        return value
    for pattern, item in value.items():
        if fnmatchcase(site, pattern):
            return item
    return default


@dataclass(frozen=True)
class ZebraConfig:
    """Settings for ``prepare``.

    ``block_size``, ``threshold`` and ``weight`` take one value or ``{name-pattern: value}`` (fnmatch
    patterns over call-site names such as ``layer1.0.relu`` or ``layer1.0.relu:1``; the first match wins,
    unmatched sites get the default). A block size larger than a map makes the whole map one block.
    ``include``/``exclude`` choose the sites whose mask and regulariser are active; every site is measured.
    """

    block_size: PerSite = DEFAULT_BLOCK_SIZE
    score: str = "mean"
    threshold: PerSite = 0.0
    penalty: str = "group_lasso"
    weight: PerSite = 1.0
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    leaf_modules: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 (frozen dataclass)
        set_("block_size", _per_site(self.block_size, "block_size", validate_block_size))
        validate_score(self.score)
        set_("threshold", _per_site(self.threshold, "threshold", _validate_threshold))
        validate_penalty(self.penalty)
        set_("weight", _per_site(self.weight, "weight", _validate_weight))
        set_("include", _validate_patterns(self.include, "include"))
        set_("exclude", _validate_patterns(self.exclude, "exclude"))
        set_("leaf_modules", _validate_patterns(self.leaf_modules, "leaf_modules"))

    def for_site(self, site: str) -> SiteConfig:
        """Resolve every per-site setting for the call site named ``site``."""
        active = any(fnmatchcase(site, p) for p in self.include) and not any(
            fnmatchcase(site, p) for p in self.exclude
        )
        return SiteConfig(
            block_size=resolve_per_site(self.block_size, site, DEFAULT_BLOCK_SIZE),
            threshold=resolve_per_site(self.threshold, site, 0.0),
            weight=resolve_per_site(self.weight, site, 1.0),
            active=active,
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ZebraConfig":
        """Build from a plain mapping (a YAML section); unknown keys are a ``ValueError`` listing the known."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ZebraError(f"unknown Zebra setting(s) {unknown}: known settings are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that ``from_dict`` reads back."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
