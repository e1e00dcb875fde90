"""A byte-exact activation codec: real streams in the dense, ZVC, Zebra and Zebra+ZVC formats whose
payload sizes are exactly the traffic model's bytes (layout: docs/FORMAT.md)."""

from .quant import WIDTHS, Quantized, dequantize, quantize
from .stream import MAX_ELEMENTS, StreamError, StreamInfo, decode, encode, fake_quantize, inspect

__all__ = ["MAX_ELEMENTS", "WIDTHS", "Quantized", "StreamError", "StreamInfo", "decode", "dequantize", "encode",
           "fake_quantize", "inspect", "quantize"]
