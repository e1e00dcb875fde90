"""A byte-exact activation codec: real streams in the dense, ZVC, Zebra and Zebra+ZVC formats whose
payload sizes are exactly the traffic model's bytes (layout: docs/FORMAT.md). Names load on first use."""

from .._lazy import lazy_package

__all__ = lazy_package(__name__, {
    "widths": ["WIDTHS", "validate_width"],
    "quant": ["Quantized", "dequantize", "quantize"],
    "stream": ["MAX_ELEMENTS", "StreamError", "StreamInfo", "decode", "encode", "fake_quantize", "inspect"],
})
