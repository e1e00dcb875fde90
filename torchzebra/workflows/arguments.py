"""The verbs' argument checks that need no torch: the command line runs them before it imports torch (a refusal
comes at once), and the workflows run them again for library callers. Every output path is checked before any
work, so a long measurement never ends in "Not a directory"."""

from __future__ import annotations

from pathlib import Path

from .._checks import number, whole
from .._defaults import CALIBRATION_IMAGES, HOLDOUT_IMAGES
from ..errors import ZebraError
from ..results.files import REPORT


def check_output_folder(path: str | Path, option: str) -> Path:
    """``path`` can be a folder to write into: it is one already or does not exist, and no part above it is a
    file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ZebraError(f"{option} {path} is a file, not a folder: give a folder to write into")
    _check_parents(path, option)
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` can be a file to write: it is not a folder, and no part above it is a file."""
    path = Path(path)
    if path.is_dir():
        raise ZebraError(f"{option} {path} is a folder: give the file to write, e.g. {path / 'out.json'}")
    _check_parents(path, option)
    return path


def _check_parents(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ZebraError(f"{option} {path}: {parent} is a file, not a folder: give another path")
            return


def check_calibration(budgets: list[float] | tuple[float, ...], images: int, holdout: int, out: str | Path) -> None:
    """Refuse a bad, zero or repeated budget, a bad image count, or an ``out`` that cannot be written or already
    holds a calibration (its checkpoints would be mixed with the new ones), in one line, before anything is read
    or written (a budget of 0 points could only keep the unmasked model)."""
    if not budgets:
        raise ZebraError("give at least one budget: the top-1 points you accept to lose, e.g. --budget 0.5 1")
    for budget in budgets:
        number(budget, "--budget", above=0, expected="use the top-1 points you accept to lose, > 0 (e.g. --budget "
                                                     "0.5 1; 0 would keep the unmasked model)")
    repeated = sorted({b for b in budgets if list(budgets).count(b) > 1})
    if repeated:
        raise ZebraError(f"--budget {' '.join(f'{b:g}' for b in repeated)} is given twice: give each budget once")
    for name, value, example in (("images", images, CALIBRATION_IMAGES), ("holdout", holdout, HOLDOUT_IMAGES)):
        whole(value, f"--{name}", least=1, expected=f"use a positive number of training images (default {example})")
    out = check_output_folder(out, "--out")
    earlier = [p.name for p in (out.iterdir() if out.is_dir() else ()) if p.name == REPORT
               or (p.name.startswith("budget-") and p.is_dir())]
    if earlier:
        raise ZebraError(f"--out {out} holds an earlier calibration ({', '.join(sorted(earlier))}): give a new "
                         "folder, or remove that one first")
