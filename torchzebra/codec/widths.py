"""The data widths the codec stores: torch-free, so the command line can list them instantly."""

from __future__ import annotations

from .._checks import choice

WIDTHS = (8, 16, 32)  # 8/16: integers with a scale; 32: IEEE float32, stored as is


def validate_width(bits: object) -> int:
    """The codec stores 8- or 16-bit integers or 32-bit floats."""
    return int(choice(bits, "bits", WIDTHS, expected="use 8 or 16 (integers with a scale) or 32 (float32) for the "
                                                     "codec"))
