"""The block mask of a channels_last ReLU map in one pass over it, on the CPU: a small C kernel, forward and backward.

For the maps the ``auto`` training mode makes on a CPU with native bfloat16 (channels_last, bfloat16 or float32,
non-negative, blocks scored by their mean, blocks that tile the map), ``masked_map`` does what ``block_keep``,
``apply_block_mask`` and the l1 ``block_penalty`` do together, reading the map once and writing it once, where the
PyTorch path takes a dozen passes; bit for bit the same output and gradient (``tests/test_cpu_kernel.py``), the
penalty the same to its last bits; ``block_sums`` gives threshold calibration the block sums it scores by, in one
pass. ``cpu_kernel.c`` is compiled on first use with the system's C compiler into the
user's cache folder, with OpenMP, so its block rows are split between the threads of PyTorch's own OpenMP runtime;
without a compiler every map takes the PyTorch path. A kernel built without OpenMP runs on one thread, and is taken
only where PyTorch runs on at most two (``torch.get_num_threads()``; more threads split the PyTorch ops between
them). ``TORCHZEBRA_CPU_KERNEL=0`` turns the kernel off, ``=1`` takes it whatever the number of threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .._checks import environment_switch
from .blocks import BlockSize, apply_block_mask, block_shape, is_channels_last, recorded_or_transformed

ENVIRONMENT_VARIABLE = "TORCHZEBRA_CPU_KERNEL"
MAX_THREADS = 2  # for a kernel built without OpenMP (one thread): measured on 2 cores (docs/PERFORMANCE.md)
SOURCE = Path(__file__).with_name("cpu_kernel.c")
# IEEE float as PyTorch computes it: no contraction into fused multiply-adds, no fast-math; built for the CPU it runs
# on where the compiler can (x86: 256-bit vectors suit the short channel runs of a block), else for any CPU
_FLAGS = ("-O3", "-fno-fast-math", "-ffp-contract=off", "-std=c99", "-shared", "-fPIC")
_TUNED = ("-march=native", "-mprefer-vector-width=256")
_OPENMP = ("-fopenmp",)  # links libgomp.so.1: in a process that has imported torch, the one torch loaded
_COMPILE_SECONDS = 120
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


def _switch() -> bool | None:
    """``TORCHZEBRA_CPU_KERNEL``: False turns the kernel off, True takes it whatever the number of threads, None
    (unset) lets the build and the threads decide."""
    return environment_switch(ENVIRONMENT_VARIABLE, "set it to 1 (the kernel whatever the threads) or 0 (off)")


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


def _compile(target: Path, openmp: bool = True) -> None:
    """Compile ``SOURCE`` into ``target`` through a temporary file, so no process ever loads a half-written one: with
    the first of OpenMP and the tuning options, OpenMP alone, the tuning options alone, or neither, that the compiler
    takes (without OpenMP where ``openmp`` is False)."""
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not compiler[0]:
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        command = [*compiler, *_FLAGS, "-o", temporary, str(SOURCE)]
        choices = [(*_OPENMP, *_TUNED), _OPENMP] if openmp else []
        for options in [*choices, _TUNED]:  # a compiler or CPU without these options: the next
            if subprocess.run([*command, *options], capture_output=True, timeout=_COMPILE_SECONDS).returncode == 0:
                break
        else:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=_COMPILE_SECONDS)
        os.chmod(temporary, 0o755)  # as a compiler's own output: others sharing the folder may load it
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _load(target: Path) -> ctypes.CDLL:
    """The library at ``target``, built first where it is missing, and built again, without OpenMP, where it does
    not load (a file cut short, an OpenMP runtime the loader does not find)."""
    if not target.exists():
        _compile(target)
    try:
        return ctypes.CDLL(str(target))
    except OSError:
        _compile(target, openmp=False)
        return ctypes.CDLL(str(target))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (once per source, flags and CPU); None where it is turned off or
    cannot be built (a warning says why, once)."""
    if _switch() is False:
        return None
    try:
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(_FLAGS + _TUNED + _OPENMP).encode() + _this_cpu())
        kernel = _load(_cache_folder() / f"cpu_kernel-{digest.hexdigest()[:16]}.so")
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        output = getattr(error, "stderr", None)
        detail = (output.decode(errors="replace") if isinstance(output, bytes) else output or str(error)).strip()
        warnings.warn(f"torchzebra's one-pass CPU block mask is not built ({detail}); the masks take the slower "
                      f"PyTorch path (the same results)", RuntimeWarning, stacklevel=2)
        return None
    for suffix in _SUFFIX.values():
        forward, backward = (getattr(kernel, f"zebra_mask_{kind}_{suffix}") for kind in ("forward", "backward"))
        sums = getattr(kernel, f"zebra_block_sums_{suffix}")
        forward.argtypes = [_P, _P, _P, _I, _I, _I, _I, _I, _I, _F, ctypes.POINTER(ctypes.c_double), ctypes.c_int32]
        backward.argtypes = [_P, _P, _P, _I, _I, _I, _I, _I, _I, _F, ctypes.c_int32, ctypes.c_int32]
        sums.argtypes = [_P, _P, _I, _I, _I, _I, _I, _I, ctypes.c_int32]
        forward.restype = backward.restype = sums.restype = ctypes.c_int32
    kernel.zebra_mask_parallel.restype = kernel.zebra_mask_threads.restype = ctypes.c_int32
    kernel.zebra_mask_threads.argtypes = [ctypes.c_int32]
    return kernel


def usable(x: torch.Tensor, block_size: BlockSize, score: str, nonnegative: bool, penalty: str | None) -> bool:
    """Whether ``masked_map`` takes ``x`` (N, C, H, W): a plain channels_last CPU tensor in bfloat16 or float32,
    non-negative, scored by its block mean, with the l1 penalty or none, in blocks that tile it, run eagerly (not
    traced, compiled, transformed, faked or under a dispatch mode), and the kernel built: with OpenMP, or PyTorch on
    at most ``MAX_THREADS`` threads (unless ``TORCHZEBRA_CPU_KERNEL=1``)."""
    if type(x) is not torch.Tensor or x.device.type != "cpu" or x.layout != torch.strided or x.dtype not in _SUFFIX:
        return False
    if not nonnegative or score != "mean" or penalty not in (None, "l1") or not is_channels_last(x):
        return False
    if recorded_or_transformed() or _get_current_dispatch_mode() is not None:
        return False
    bh, bw = block_shape(block_size, x.shape[-2], x.shape[-1])
    if x.shape[-2] % bh or x.shape[-1] % bw or (kernel := library()) is None:
        return False
    return bool(kernel.zebra_mask_parallel()) or torch.get_num_threads() <= MAX_THREADS or _switch() is True


def _forward(x: torch.Tensor, out: torch.Tensor, block: tuple[int, int], limit: float) -> tuple[torch.Tensor, float]:
    """Run the forward kernel: ``out`` the masked ``x`` (it may be ``x``), the kept-block mask (N, Hb, Wb, C) as
    bytes, and the total of the block sums."""
    n, c, height, width = x.shape
    keep = torch.empty(n, height // block[0], width // block[1], c, dtype=torch.uint8, device=x.device)
    total = ctypes.c_double()
    if getattr(library(), f"zebra_mask_forward_{_SUFFIX[x.dtype]}")(
            x.data_ptr(), out.data_ptr(), keep.data_ptr(), n, height, width, c, *block, limit, ctypes.byref(total),
            torch.get_num_threads()):  # as many threads as PyTorch's own operations on this thread
        raise MemoryError(f"the CPU block mask could not allocate its row buffers for a {tuple(x.shape)} map")
    return keep, total.value


def _backward(grad: torch.Tensor, keep: torch.Tensor, block: tuple[int, int], constant: float | None) -> torch.Tensor:
    """Run the backward kernel: ``grad`` (channels_last) times the kept-block mask, plus ``constant`` if given."""
    n, c, height, width = grad.shape
    out = torch.empty_like(grad)
    if getattr(library(), f"zebra_mask_backward_{_SUFFIX[grad.dtype]}")(
            grad.data_ptr(), out.data_ptr(), keep.data_ptr(), n, height, width, c, *block,
            0.0 if constant is None else constant, constant is not None, torch.get_num_threads()):
        raise MemoryError(f"the CPU block mask's backward could not allocate its row buffer for {tuple(grad.shape)}")
    return out


def _penalty(total: float, x: torch.Tensor) -> torch.Tensor:
    """The l1 penalty of a non-negative map from the total of its block sums: the map's mean, in its dtype."""
    return (torch.tensor(total, dtype=torch.float32, device=x.device) / x.numel()).to(x.dtype)


def block_sums(x: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """``block_magnitude_sums(x, block_size, nonnegative=True)`` of a map ``masked_map`` takes (see ``usable``), the
    same bits, in one pass: float32, (N, C, Hb, Wb) over channels_last memory. Threshold calibration scores by them."""
    n, c, height, width = x.shape
    bh, bw = block_shape(block_size, height, width)
    sums = torch.empty(n, height // bh, width // bw, c, dtype=torch.float32, device=x.device)
    if getattr(library(), f"zebra_block_sums_{_SUFFIX[x.dtype]}")(
            x.data_ptr(), sums.data_ptr(), n, height, width, c, bh, bw, torch.get_num_threads()):
        raise MemoryError(f"the CPU block sums could not allocate their row buffers for a {tuple(x.shape)} map")
    return sums.permute(0, 3, 1, 2)


class _OnePassMask(torch.autograd.Function):
    """The masked map and the l1 penalty (the mean of the map, from its block sums), differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, block_size: BlockSize, limit: float):  # type: ignore[override]
        block = block_shape(block_size, x.shape[-2], x.shape[-1])
        out = torch.empty_like(x)  # channels_last, as x
        keep, total = _forward(x, out, block, limit)
        ctx.save_for_backward(keep)
        ctx.block, ctx.block_size, ctx.shape, ctx.dtype = block, block_size, x.shape, x.dtype
        ctx.set_materialize_grads(False)
        return out, _penalty(total, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, grad_penalty: torch.Tensor | None):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        # the penalty's gradient, as _LayoutMean's backward makes it; added once, as autograd adds the two
        constant = None if grad_penalty is None else (grad_penalty / math.prod(ctx.shape)).to(ctx.dtype)
        if grad is None:  # only the penalty reached the loss
            return (None if constant is None else constant.expand(ctx.shape)), None, None
        if torch.is_grad_enabled():  # a double backward: the PyTorch ops, whose result has a graph of its own
            masked = apply_block_mask(grad, keep.permute(0, 3, 1, 2).bool(), ctx.block_size)
            return (masked if constant is None else masked + constant), None, None
        grad = grad.contiguous(memory_format=torch.channels_last)
        return _backward(grad, keep, ctx.block, None if constant is None else constant.item()), None, None


def masked_map(x: torch.Tensor, block_size: BlockSize, threshold: torch.Tensor, penalty: bool,
               inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``apply_block_mask(x, block_keep(x, block_size, "mean", threshold, nonnegative=True))`` and, with
    ``penalty``, ``block_penalty(x, block_size, "l1", nonnegative=True)``, in one pass over ``x`` (see ``usable``).
    ``inplace`` overwrites ``x`` where autograd does not need it."""
    bh, bw = block_shape(block_size, x.shape[-2], x.shape[-1])
    limit = float((threshold.detach().to(torch.float32) * float(bh * bw))
                  .clamp(max=torch.finfo(torch.float32).max))  # threshold x count, as block_keep compares the sums
    if x.requires_grad and torch.is_grad_enabled():
        out, value = _OnePassMask.apply(x, block_size, limit)
        return out, value if penalty else None
    out = x if inplace else torch.empty_like(x)
    _, total = _forward(x.detach(), out, (bh, bw), limit)
    if out is x:  # written through a pointer: tell autograd's saved-tensor checks, as an in-place op would
        torch.autograd.graph.increment_version(x)
    return out, (_penalty(total, x) if penalty else None)
