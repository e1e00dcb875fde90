"""ZebraLayer: the module ``prepare`` inserts after one activation call site."""

from __future__ import annotations

import torch
from torch import nn

from ..core import (
    BlockSize,
    TrafficTally,
    apply_block_mask,
    block_keep,
    block_magnitude_sums,
    block_penalty,
    block_scores,
    cpu_kernel,
    fused,
    penalty_from_moments,
    quantile,
    validate_block_size,
    validate_penalty,
    validate_score,
)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of all ``values`` (torch.quantile's); from 8 million values on, of every k-th value only,
    k = n // 4 million (4 to 8 million values)."""
    flat = values.detach().flatten().float()
    step = max(1, flat.numel() // 4_000_000)
    return quantile(flat[::step], q)


class ZebraLayer(nn.Module):
    """Zeroes the blocks of an activation map whose score is at most the layer's threshold.

    One instance per call site, with its own threshold (a buffer, so it is saved and loaded with the
    model). In training with grad enabled (and ``penalized``, which ``set_penalty`` turns off) it computes
    the zero-block penalty of the unmasked activation in the same forward (``last_penalty``, a scalar that
    ``zero_block_loss`` sums: a compiled model fuses it with the mask and hands back one number per layer,
    not the map); on a GPU in eager mode, once turned on (``TORCHZEBRA_FUSED_KERNELS=1`` or
    ``core.set_fused_kernels(True)``; off by default), the fused Triton kernels do all of it in one pass over
    the map (``core/fused.py``); while ``tally`` is set it counts the traffic of every map it outputs. Inputs that
    are not 4-D maps (a classifier's ReLU) pass through unchanged and are never counted.
    """

    threshold: torch.Tensor  # a buffer (registered in __init__), typed for the checker

    def __init__(
        self,
        site: str,
        block_size: BlockSize = 4,
        score: str = "mean",
        threshold: float = 0.0,
        penalty: str = "group_lasso",
        weight: float = 1.0,
        active: bool = True,
        nonnegative: bool = False,
    ) -> None:
        super().__init__()
        self.site = site
        self.block_size = validate_block_size(block_size)
        self.score = validate_score(score)
        self.penalty = validate_penalty(penalty)
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.weight = weight
        self.active = active
        self.masking = True  # switched off by ``set_masking`` for exactness checks
        self.penalized = True  # computes ``last_penalty`` in training; ``set_penalty`` switches it off
        self.nonnegative = nonnegative
        # prepare() sets it where nobody else reads the input: overwritten when autograd does not need it
        self.inplace = False
        self.consumers = 1  # operations that read this map; prepare() counts them in the traced graph
        self.last_penalty: torch.Tensor | None = None
        self.tally: TrafficTally | None = None
        self.calibration_density: float | None = None  # set by ``calibrate`` for one pass
        self.layout: str | None = "NCHW"  # "NHWC" after a permute to channels-last (ConvNeXt); prepare sets it
        self.skipped: str | None = None  # why this site is left unmasked and uncounted, when it is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self.skipped is not None:
            return x
        if self.layout == "NHWC":  # mask and count the (N, C, H, W) view; hand back the caller's layout
            return self._masked(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self._masked(x)

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        """The block mask of ``x`` (N, C, H, W) applied, the map counted while a tally is set."""
        penalty = self.penalty if self.training and torch.is_grad_enabled() and self.active and self.penalized else None
        inplace = self.inplace and not torch.is_grad_enabled()
        masking = self.active and self.masking
        calibrating = masking and self.calibration_density is not None
        kernel = masking and cpu_kernel.usable(x, self.block_size, self.score, self.nonnegative, penalty)
        if calibrating:  # the threshold from this map's block scores, then the map masked with it
            sums = cpu_kernel.block_sums(x, self.block_size) if kernel else None
            scores = block_scores(x, self.block_size, self.score, self.nonnegative, sums)
            self.threshold.fill_(_quantile(scores, 1.0 - self.calibration_density))
        per_block = None  # the masked blocks' non-zero counts, where the fused kernel counted them
        if masking and not calibrating and fused.usable(x, self.block_size):
            x, moments, per_block = fused.masked_activation(
                x, self.block_size, self.score, self.threshold, self.nonnegative, penalty, self.tally is not None,
                inplace)
            self.last_penalty = penalty_from_moments(moments, penalty) if penalty else None
        elif kernel:
            x, self.last_penalty = cpu_kernel.masked_map(x, self.block_size, self.threshold, penalty is not None,
                                                         inplace)
        else:
            # the mean score's block sums serve the l1 penalty of a non-negative map too: one pass over the map fewer
            shared = masking and penalty == "l1" and self.score == "mean" and self.nonnegative
            sums = block_magnitude_sums(x, self.block_size, self.nonnegative) if shared else None
            self.last_penalty = block_penalty(x, self.block_size, penalty, self.nonnegative, sums) if penalty else None
            if masking:
                keep = block_keep(x, self.block_size, self.score, self.threshold, self.nonnegative, sums)
                x = apply_block_mask(x, keep, self.block_size, inplace=inplace)
        if self.tally is not None:
            self.tally.add(x.detach(), per_block)
        return x

    def __prepare_scriptable__(self) -> "ZebraLayer":
        """torch.jit.script calls this first: refuse with what works instead of a TorchScript type error."""
        raise RuntimeError(
            "torch.jit.script cannot compile a model prepared by torchzebra (its layers keep Python state for "
            "training and counting); use torch.jit.trace, torch.export, torch.compile, or ONNX through "
            "torchzebra.export.to_onnx / torch.onnx.export(..., dynamo=True)"
        )

    def extra_repr(self) -> str:
        return (
            f"site={self.site!r}, block_size={self.block_size!r}, score={self.score!r}, "
            f"threshold={self.threshold.item():g}, active={self.active}, consumers={self.consumers}"
            + (f", layout={self.layout}" if self.layout != "NCHW" else "") + (", skipped" if self.skipped else "")
        )
