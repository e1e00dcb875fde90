"""One way to check a value a user gave: a number within a range, a whole number, a fraction, a choice.

Each returns the value (as ``float``/``int``) or raises a one-line ``ZebraError`` (or the subclass given as
``error``) in the project's style, ``name=value is invalid: use ...`` (``--flag value is invalid: ...`` for a
command-line flag). A bool is never a number here, and NaN or infinity never within a range. Torch-free, so the
command line can check its arguments before importing torch.
"""

from __future__ import annotations

import math
import os
from typing import Any, Collection, TypeVar

from .errors import ZebraError

T = TypeVar("T")
_SWITCH = {"0": False, "false": False, "off": False, "no": False, "1": True, "true": True, "on": True, "yes": True}


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(name: str, value: object) -> str:
    """``--flag value`` as typed on a command line, else ``name=value`` as a setting reads."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"


def _refuse(name: str, value: object, expected: str, error: type[ZebraError]) -> ZebraError:
    return error(f"{_shown(name, value)} is invalid: {expected}")


def _range(least: float | None, above: float | None, most: float | None, below: float | None) -> str:
    """``>= 0``, ``> 0``, ``in (0, 1]``, ... for a range's bounds."""
    low, high = (least, "[") if least is not None else (above, "(")
    top, close = (most, "]") if most is not None else (below, ")")
    if low is not None and top is not None:
        return f"in {high}{low:g}, {top:g}{close}"
    if low is not None:
        return f"{'>=' if least is not None else '>'} {low:g}"
    return f"{'<=' if most is not None else '<'} {top:g}" if top is not None else ""


def _within(value: float, least: float | None, above: float | None, most: float | None, below: float | None) -> bool:
    return ((least is None or value >= least) and (above is None or value > above)
            and (most is None or value <= most) and (below is None or value < below))


def number(value: object, name: str, *, least: float | None = None, above: float | None = None,
           most: float | None = None, below: float | None = None, expected: str | None = None,
           error: type[ZebraError] = ZebraError) -> float:
    """``value`` as a float if it is a finite number within the bounds given (``least``/``most`` inclusive,
    ``above``/``below`` exclusive); ``expected`` replaces the message's ``use a finite number ...``."""
    if not is_number(value) or not _within(value, least, above, most, below):  # type: ignore[arg-type]
        raise _refuse(name, value, expected or f"use a finite number {_range(least, above, most, below)}".rstrip(),
                      error)
    return float(value)  # type: ignore[arg-type]


def whole(value: object, name: str, *, least: int | None = None, most: int | None = None,
          expected: str | None = None, error: type[ZebraError] = ZebraError) -> int:
    """``value`` if it is a whole number within ``least``..``most`` (inclusive)."""
    if not is_whole(value) or not _within(value, least, None, most, None):  # type: ignore[arg-type]
        raise _refuse(name, value, expected or f"use a whole number {_range(least, None, most, None)}".rstrip(),
                      error)
    return value  # type: ignore[return-value]


def fraction(value: object, name: str, *, zero: bool = False, one: bool = True, expected: str | None = None,
             error: type[ZebraError] = ZebraError) -> float:
    """``value`` if it is a number in [0, 1] (``zero``/``one``: whether 0 and 1 themselves are allowed)."""
    return number(value, name, least=0 if zero else None, above=None if zero else 0, most=1 if one else None,
                  below=None if one else 1, expected=expected, error=error)


def choice(value: Any, name: str, choices: Collection[T], *, expected: str | None = None,
           error: type[ZebraError] = ZebraError) -> T:
    """``value`` if it is one of ``choices`` (a bool never stands for 0 or 1)."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices) or value not in choices:
        raise _refuse(name, value, expected or f"use one of {', '.join(map(str, choices))}", error)
    return value


def environment_switch(name: str, expected: str) -> bool | None:
    """The environment variable ``name`` read as a switch: True for 1/true/on/yes, False for 0/false/off/no (any
    case, spaces ignored), None where it is unset or empty; anything else is refused with ``expected``."""
    value = os.environ.get(name, "")
    if not value.strip():
        return None
    switch = _SWITCH.get(value.strip().lower())
    if switch is None:
        raise _refuse(name, value, expected, ZebraError)
    return switch
