"""A byte-exact activation codec: real streams in the dense, ZVC, Zebra and Zebra+ZVC formats whose
payload sizes are exactly the traffic model's bytes (layout: docs/FORMAT.md). Names load on first use."""

from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .quant import Quantized, dequantize, quantize
    from .stream import MAX_ELEMENTS, StreamError, StreamInfo, decode, encode, fake_quantize, inspect
    from .widths import WIDTHS, validate_width

__all__ = lazy_package(__name__, {
    "widths": ["WIDTHS", "validate_width"],
    "quant": ["Quantized", "dequantize", "quantize"],
    "stream": ["MAX_ELEMENTS", "StreamError", "StreamInfo", "decode", "encode", "fake_quantize", "inspect"],
})
