"""The block mask of a channels_last ReLU map in one pass over it, on the CPU: a small C kernel, forward and backward.

For the maps the ``auto`` training mode makes on a CPU with native bfloat16 (channels_last, bfloat16 or float32,
non-negative, blocks scored by their mean, blocks that tile the map), ``masked_map`` does what ``block_keep``,
``apply_block_mask`` and the l1 ``block_penalty`` do together, reading the map once and writing it once, where the
PyTorch path takes a dozen passes; bit for bit the same output and gradient (``tests/test_cpu_kernel.py``), the
penalty the same to its last bits. ``cpu_kernel.c`` is compiled on first use with the system's C compiler into the
user's cache folder; without a compiler, or with ``TORCHZEBRA_CPU_KERNEL=0``, every map takes the PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from .blocks import BlockSize, block_shape, is_channels_last, recorded_or_transformed

ENVIRONMENT_VARIABLE = "TORCHZEBRA_CPU_KERNEL"
SOURCE = Path(__file__).with_name("cpu_kernel.c")
# IEEE float as PyTorch computes it: no contraction into fused multiply-adds, no fast-math; built for the CPU it runs
# on where the compiler can (x86: 256-bit vectors suit the short channel runs of a block), else for any CPU
_FLAGS = ("-O3", "-ffp-contract=off", "-std=c99", "-shared", "-fPIC")
_TUNED = ("-march=native", "-mprefer-vector-width=256")
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


def _this_cpu() -> bytes:
    """What ``-march=native`` builds for: the CPU's model and feature flags (a cached kernel is never loaded on
    another kind of CPU that shares the cache folder)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor().encode()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))})).encode()


def _cache_folder() -> Path:
    """Where the compiled kernel is kept: ``$XDG_CACHE_HOME/torchzebra`` (default ``~/.cache/torchzebra``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchzebra"


def _compile(target: Path) -> None:
    """Compile ``SOURCE`` into ``target`` through a temporary file, so no process ever loads a half-written one."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        tuned = subprocess.run([compiler, *_FLAGS, *_TUNED, "-o", temporary, str(SOURCE)], capture_output=True)
        if tuned.returncode:  # a compiler or CPU without these options
            subprocess.run([compiler, *_FLAGS, "-o", temporary, str(SOURCE)], check=True, capture_output=True,
                           text=True)
        os.replace(temporary, target)
        for older in target.parent.glob("cpu_kernel-*.so"):  # other sources, flags or CPUs (unlinking is safe
            if older != target:                             # for a process that has one loaded)
                older.unlink(missing_ok=True)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (once per source, flags and CPU); None where it is turned off or
    cannot be built (a warning says why, once)."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in ("0", "false", "off", "no"):
        return None
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(_FLAGS + _TUNED).encode() + _this_cpu()).hexdigest()[:16]
    target = _cache_folder() / f"cpu_kernel-{digest}.so"
    try:
        if not target.exists():
            _compile(target)
        kernel = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        warnings.warn(f"torchzebra's one-pass CPU block mask is not built ({detail}); the masks take the slower "
                      f"PyTorch path (the same results)", RuntimeWarning, stacklevel=2)
        return None
    for suffix in _SUFFIX.values():
        getattr(kernel, f"zebra_mask_forward_{suffix}").argtypes = [_P, _P, _P, _I, _I, _I, _I, _I, _I, _F]
        getattr(kernel, f"zebra_mask_forward_{suffix}").restype = ctypes.c_double
        getattr(kernel, f"zebra_mask_backward_{suffix}").argtypes = [_P, _P, _P, _I, _I, _I, _I, _I, _I, _F,
                                                                      ctypes.c_int32]
        getattr(kernel, f"zebra_mask_backward_{suffix}").restype = ctypes.c_int32
    return kernel


def usable(x: torch.Tensor, block_size: BlockSize, score: str, nonnegative: bool, penalty: str | None) -> bool:
    """Whether ``masked_map`` takes ``x`` (N, C, H, W): a channels_last CPU map in bfloat16 or float32, non-negative,
    scored by its block mean, with the l1 penalty or none, in blocks that tile it, run eagerly (not traced,
    compiled or transformed), and the kernel built."""
    if x.device.type != "cpu" or x.dtype not in _SUFFIX or not nonnegative or score != "mean":
        return False
    if penalty not in (None, "l1") or not is_channels_last(x) or recorded_or_transformed():
        return False
    bh, bw = block_shape(block_size, x.shape[-2], x.shape[-1])
    return x.shape[-2] % bh == 0 and x.shape[-1] % bw == 0 and library() is not None


def _forward(x: torch.Tensor, out: torch.Tensor, block: tuple[int, int], limit: float) -> tuple[torch.Tensor, float]:
    """Run the forward kernel: ``out`` the masked ``x`` (it may be ``x``), the kept-block mask (N, Hb, Wb, C) as
    bytes, and the total of the block sums."""
    n, c, height, width = x.shape
    keep = torch.empty(n, height // block[0], width // block[1], c, dtype=torch.uint8)
    total = getattr(library(), f"zebra_mask_forward_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), out.data_ptr(), keep.data_ptr(), n, height, width, c, *block, limit)
    if total < 0:  # block sums of a non-negative map are never negative: the kernel's buffers were not allocated
        raise MemoryError(f"the CPU block mask could not allocate its row buffers for a {tuple(x.shape)} map")
    return keep, total


class _OnePassMask(torch.autograd.Function):
    """The masked map and the l1 penalty (the mean of the map, from its block sums), differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, block: tuple[int, int], limit: float):  # type: ignore[override]
        out = torch.empty_like(x)  # channels_last, as x
        keep, total = _forward(x, out, block, limit)
        ctx.save_for_backward(keep)
        ctx.block, ctx.shape, ctx.dtype = block, x.shape, x.dtype
        ctx.set_materialize_grads(False)
        return out, (torch.tensor(total, dtype=torch.float32) / x.numel()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, grad_penalty: torch.Tensor | None):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        if grad is None:
            grad = torch.zeros(ctx.shape, dtype=ctx.dtype)
        grad = grad.contiguous(memory_format=torch.channels_last)
        # the penalty's gradient, as _LayoutMean's backward makes it; then added once, as autograd adds the two
        constant = None if grad_penalty is None else (grad_penalty / grad.numel()).to(ctx.dtype).item()
        return _backward(grad, keep, ctx.block, constant), None, None


def _backward(grad: torch.Tensor, keep: torch.Tensor, block: tuple[int, int], constant: float | None) -> torch.Tensor:
    """Run the backward kernel: ``grad`` (channels_last) times the kept-block mask, plus ``constant`` if given."""
    n, c, height, width = grad.shape
    out = torch.empty_like(grad)
    if getattr(library(), f"zebra_mask_backward_{_SUFFIX[grad.dtype]}")(
            grad.data_ptr(), out.data_ptr(), keep.data_ptr(), n, height, width, c, *block, constant or 0.0,
            constant is not None):
        raise MemoryError(f"the CPU block mask's backward could not allocate its row buffer for {tuple(grad.shape)}")
    return out


def masked_map(x: torch.Tensor, block_size: BlockSize, threshold: torch.Tensor, penalty: bool,
               inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``apply_block_mask(x, block_keep(x, block_size, "mean", threshold, nonnegative=True))`` and, with
    ``penalty``, ``block_penalty(x, block_size, "l1", nonnegative=True)``, in one pass over ``x`` (see ``usable``).
    ``inplace`` overwrites ``x`` where autograd does not need it."""
    block = block_shape(block_size, x.shape[-2], x.shape[-1])
    limit = float((threshold.detach().to(torch.float32) * float(block[0] * block[1]))
                  .clamp(max=torch.finfo(torch.float32).max))  # threshold x count, as block_keep compares the sums
    if x.requires_grad and torch.is_grad_enabled():
        out, value = _OnePassMask.apply(x, block, limit)
        return out, value if penalty else None
    out = x if inplace else torch.empty_like(x)
    _, total = _forward(x.detach(), out, block, limit)
    return out, ((torch.tensor(total, dtype=torch.float32) / x.numel()).to(x.dtype) if penalty else None)
