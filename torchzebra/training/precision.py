"""The training precision and memory format: ``auto`` resolved per device from PyTorch's capability queries.

``train.precision`` (``auto | fp32 | bf16``) and ``train.channels_last`` (``auto | true | false``) shape the
training step only: evaluation, counting and calibration run the model in float32 and in its plain layout, as
deployed, so every traffic figure is exact and comparable between runs trained either way. ``auto`` picks bf16
autocast with channels_last where the device has native bf16 arithmetic (a CPU with AVX512_BF16 or AMX, a GPU
that PyTorch reports bf16 for), and float32 in the plain layout elsewhere, where bf16 is emulated and slower.
The choice comes from the hardware, not from a timing, so a seed trains alike on every run of one machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, cast

import torch

from ..config.run import OptimSection, RunConfig

AUTO = "auto"


@dataclass(frozen=True)
class Precision:
    """The resolved training mode: ``bf16`` autocast or ``fp32``, the memory format, and why."""

    dtype: str  # "bf16" or "fp32"
    channels_last: bool
    reason: str  # what the device offers, e.g. "native bf16 (AVX512_BF16)"

    @property
    def autocast(self) -> bool:
        """Whether the training forward runs under bf16 autocast."""
        return self.dtype == "bf16"

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``bf16 autocast, channels_last (native bf16: AVX512_BF16)``."""
        layout = "channels_last" if self.channels_last else "contiguous"
        mode = "bf16 autocast" if self.autocast else "fp32"
        return f"{mode}, {layout} ({self.reason})"


def native_bf16(device: torch.device) -> str | None:
    """The native bf16 support of ``device`` in words (``"AVX512_BF16"``, ``"AMX"``, ``"CUDA"``), or None where
    bf16 would be emulated. CPUs are asked through ``torch.cpu``'s capability queries (a torch without them
    counts as no support)."""
    if device.type == "cuda":
        return "CUDA" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    queries = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))
    for name, query in queries:
        if getattr(torch.cpu, query, lambda: False)():
            return name
    return None


def resolve_precision(optim: OptimSection, device: torch.device) -> Precision:
    """The training mode of ``optim`` on ``device``: explicit settings as given, ``auto`` from ``native_bf16``."""
    native = native_bf16(device)
    reason = f"native bf16: {native}" if native else f"no native bf16 on this {device.type}"
    dtype = optim.precision if optim.precision != AUTO else ("bf16" if native else "fp32")
    layout = optim.channels_last if optim.channels_last != AUTO else native is not None
    if optim.precision != AUTO and optim.channels_last != AUTO:
        reason = "as configured"
    return Precision(dtype, bool(layout), reason)


def resolved(optim: OptimSection, device: torch.device) -> OptimSection:
    """``optim`` with ``auto`` replaced by the choice for ``device`` (what a run saves and a resume compares)."""
    choice = resolve_precision(optim, device)
    return replace(optim, precision=cast(Literal["fp32", "bf16"], choice.dtype), channels_last=choice.channels_last)


def training_modes(config: RunConfig, device: torch.device) -> str:
    """How a run's stages train on ``device``, in words: one mode, or the ``train`` and ``finetune`` modes where
    they differ (for the machine line of reports)."""
    dense, finetune = (resolve_precision(optim, device).describe() for optim in (config.train, config.finetune))
    return dense if dense == finetune else f"train: {dense}; finetune: {finetune}"
