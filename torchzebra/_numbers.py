"""Numbers as a user writes and reads them: exponent numbers that YAML reads as text, counts in words and
signed percentages."""

from __future__ import annotations

import re
from typing import Any

# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent: `1.0e9` and `1e-3` stay text
_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def yaml_numbers(value: Any) -> Any:
    """``value`` with every text that is a number in exponent form (``1.0e9``, ``1e-3``) made a float, in lists
    and mapping values too; anything else as it is."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [yaml_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: yaml_numbers(item) for key, item in value.items()}
    return value


def counted(value: float, word: str) -> str:
    """A number of ``word`` (points of top-1, points of a sweep, epochs): ``1 point``, ``0.5 points``, ``0 points``."""
    return f"{value:g} {word}" + ("" if abs(value) == 1 else "s")


def signed_percent(fraction: float, digits: int = 1) -> str:
    """A fraction as a signed percentage that never reads ``-0.0%``: ``+12.3%``, ``-4.0%``, ``+0.0%``."""
    return f"{round(fraction * 100, digits) + 0.0:+.{digits}f}%"


def percent(fraction: float, digits: int = 1) -> str:
    """A fraction as a percentage that never reads ``-0.0%`` (a reduction of ``-1e-9``): ``12.3%``, ``0.0%``."""
    return f"{round(fraction * 100, digits) + 0.0:.{digits}f}%"
