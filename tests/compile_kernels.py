"""Compile the fused Triton kernels for an H100 (sm_90) without a GPU, as Triton does before a first launch.

Run by tests/test_fused.py in a process of its own: Triton's interpreter, which the other tests use on
machines without a GPU, must not be on here. Prints one line per compiled variant; exits non-zero on the
first kernel that does not compile.
"""

import inspect
import itertools
import os

assert os.environ.get("TRITON_INTERPRET", "0") == "0", "compile the kernels with Triton's interpreter off"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from torchzebra.core import triton_kernels  # noqa: E402

POINTERS = {"threshold_ptr": "*fp32", "keep_ptr": "*i8", "moment_ptr": "*fp32", "nonzero_ptr": "*i32",
            "moment_grad_ptr": "*fp32"}  # the map's own pointers (x, out, grad) take its dtype


def signature(kernel, dtype: str, constants: dict) -> dict:
    parameters = inspect.signature(kernel.fn).parameters
    return {name: "constexpr" if name in constants else POINTERS.get(name, f"*{dtype}") if name.endswith("_ptr")
            else "i32" for name in parameters}


def main() -> None:
    target = GPUTarget("cuda", 90, 32)
    tiles = [dict(CT=16, BH=4, WB=8, BW=4, bh=4, bw=4), dict(CT=1, BH=8, WB=1, BW=8, bh=7, bw=7)]  # 4x4 blocks; a 7x7 map
    for dtype, tile in itertools.product(("bf16", "fp16", "fp32"), tiles):
        variants = [(triton_kernels.forward_kernel, dict(SCORE=score, NONNEGATIVE=score == 0, MOMENT=moment, COUNT=count))
                    for score, (moment, count) in zip((0, 1, 2), ((2, True), (0, False), (1, True)))]
        variants += [(triton_kernels.backward_kernel, dict(MOMENT=moment)) for moment in (0, 1, 2)]
        for kernel, options in variants:
            constants = {**tile, **options}
            triton.compile(ASTSource(kernel, signature(kernel, dtype, constants), constants), target=target)
            print(kernel.fn.__name__, dtype, constants, "compiled", flush=True)


if __name__ == "__main__":
    main()
