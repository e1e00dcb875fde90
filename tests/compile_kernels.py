"""Compile the fused Triton kernels for an H100 (sm_90) without a GPU, as Triton does before a first launch.

The arguments come from ``fused.forward_launch``/``backward_launch`` on meta tensors of typical maps, and
are specialised as Triton's launcher specialises them (an int equal to 1 becomes a constant, pointers and
ints divisible by 16 are marked so; ``num_warps`` as launched), so what compiles here is what a GPU would
launch. Run by tests/test_fused.py in a process of its own: Triton's interpreter, which the other tests use on
machines without a GPU, must be off here. Prints one line per compiled variant; fails on the first kernel
that does not compile.
"""

import inspect
import itertools
import os

assert os.environ.get("TRITON_INTERPRET", "0") == "0", "compile the kernels with Triton's interpreter off"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from torchzebra.core import fused, triton_kernels  # noqa: E402

TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int8: "i8", torch.int32: "i32"}
MAPS = [((256, 64, 32, 32), 4, torch.contiguous_format), ((256, 64, 32, 32), 4, torch.channels_last),
        ((256, 512, 2, 2), 4, torch.channels_last), ((8, 3, 7, 7), 3, torch.contiguous_format),
        ((2, 8, 100, 100), "map", torch.contiguous_format)]  # (shape, block, layout)
OPTIONS = [("mean", True, 2, True), ("max", False, 0, False), ("rms", False, 1, True),
           ("mean", True, 1, False)]  # score, nonnegative, moment, count


def compile_launch(kernel, args: tuple, constants: dict) -> None:
    """Compile ``kernel`` for sm_90 with ``args`` specialised as a launch would be."""
    constants = dict(constants)
    num_warps = constants.pop("num_warps")
    names = list(inspect.signature(kernel.fn).parameters)
    signature, attributes = {}, {}
    for index, (name, value) in enumerate(zip(names, args)):
        if name in ("bh", "bw") or (isinstance(value, int) and value == 1):
            signature[name], constants[name] = "constexpr", value
            continue
        signature[name] = f"*{TYPES[value.dtype]}" if isinstance(value, torch.Tensor) else "i32"
        if isinstance(value, torch.Tensor) or value % 16 == 0:
            attributes[(index,)] = [["tt.divisibility", 16]]
    signature.update({name: "constexpr" for name in constants if name not in signature})
    source = ASTSource(kernel, signature, constants, attrs=attributes)
    triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def main() -> None:
    threshold = torch.empty((), device="meta")
    for dtype, (shape, block, layout) in itertools.product((torch.bfloat16, torch.float16, torch.float32), MAPS):
        x = torch.empty(shape, dtype=dtype, device="meta", memory_format=layout)
        tiling = fused._tiling(x, block)
        for score, nonnegative, moment, count in OPTIONS:
            options = fused._Options(tiling, score, nonnegative, moment, count)
            _, args, constants, (keep, moments, _) = fused.forward_launch(x, torch.empty_like(x), threshold, options)
            compile_launch(triton_kernels.forward_kernel, args, constants)
            print("forward", dtype, shape, block, score, "compiled", flush=True)
            grad = torch.empty((), dtype=dtype, device="meta").expand(shape) if moment else torch.empty_like(x)
            _, args, constants = fused.backward_launch(grad, x, keep, moments, torch.empty_like(x), options)
            compile_launch(triton_kernels.backward_kernel, args, constants)
            print("backward", dtype, shape, block, moment, "compiled", flush=True)


if __name__ == "__main__":
    main()
