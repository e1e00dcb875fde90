"""The storage formats and data widths by name: torch-free, so the command line can list them instantly."""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import whole
from ..errors import ZebraError


@dataclass(frozen=True)
class Format:
    """One storage format of an activation map: its name in settings and files, its title in reports, and its
    wire code, the number a codec stream's header stores (fixed by docs/FORMAT.md, never by the order here)."""

    name: str
    title: str
    compressed: bool
    code: int


# The one registry of formats: every table, plot and export takes names, titles and order from here.
FORMAT_REGISTRY: dict[str, Format] = {f.name: f for f in (
    Format("dense", "dense", False, code=0),
    Format("zvc", "ZVC", True, code=1),
    Format("zebra", "Zebra", True, code=2),
    Format("zebra_zvc", "Zebra+ZVC", True, code=3),
)}
FORMATS = tuple(FORMAT_REGISTRY)
COMPRESSED = tuple(name for name, f in FORMAT_REGISTRY.items() if f.compressed)


def format_title(fmt: str) -> str:
    """The title of a format in reports (``zebra_zvc`` -> ``Zebra+ZVC``)."""
    return FORMAT_REGISTRY[validate_format(fmt)].title


def validate_format(fmt: object) -> str:
    """Return ``fmt`` if it names a storage format, else raise a ``ValueError`` listing them."""
    if fmt not in FORMATS:
        raise ZebraError(f"format={fmt!r} is invalid: use one of {', '.join(FORMATS)}")
    return fmt  # type: ignore[return-value]


def validate_bits(bits: object) -> int:
    """Return the data width ``bits`` if it is an integer in 1..64, else raise a ``ValueError``."""
    return whole(bits, "bits", least=1, most=64,
                 expected="use the data width in bits, an integer from 1 to 64 (e.g. 8 or 16)")
