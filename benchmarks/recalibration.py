"""What one threshold recalibration of the main job costs, and what of it is the calibration itself.

The recipe recalibrates at each epoch's first step and every ``calibrate_every`` steps: one more forward over the
training batch, in eval mode and float32, in which every map's block scores set its threshold. Timed alternately in
one process on the ``quick`` preset's model (channels_last, batch 128x1x32x32): the recalibration as it runs (block
sums from the one-pass CPU kernel where a map takes it, the quantile by selection, ``core/quantile.py``), the same
with the PyTorch ops and ``torch.quantile``, and the masked forward alone; it checks that both set the same
thresholds, bit for bit.

    .venv/bin/python benchmarks/recalibration.py [--repeats 12] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import torch
from timing import alternating

import torchzebra.nn.layer as zebra_layer
from torchzebra.analysis.calibrate import calibrate
from torchzebra.config import load_config
from torchzebra.core import cpu_kernel
from torchzebra.data import DataSpec
from torchzebra.training import keep_freed_memory
from torchzebra.training.building import build_prepared_model

SPEC = DataSpec("fashion-mnist", 10, 1, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12, help="timed runs of each variant")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    keep_freed_memory()  # as the zebra command does
    config = load_config("quick", overrides=["device=cpu"])
    torch.manual_seed(config.seed)
    model = build_prepared_model(config, SPEC, masked=True).to(memory_format=torch.channels_last)
    inputs = torch.rand(args.batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    density = config.zebra.density
    assert density is not None, "the quick preset sets its kept-block densities"

    def recalibration() -> dict[str, float]:
        return calibrate(model, [inputs], density)

    def pytorch_ops() -> dict[str, float]:
        with (mock.patch.object(cpu_kernel, "usable", lambda *args: False),
              mock.patch.object(zebra_layer, "quantile", torch.quantile)):
            return calibrate(model, [inputs], density)

    def masked_forward() -> None:
        with torch.no_grad():
            model.eval()(inputs)

    same = {site: value.hex() for site, value in recalibration().items()} == {
        site: value.hex() for site, value in pytorch_ops().items()}
    times = alternating({"recalibration": lambda index: recalibration(),
                         "with the PyTorch ops and torch.quantile": lambda index: pytorch_ops(),
                         "the masked forward alone": lambda index: masked_forward()}, args.repeats)
    print(f"quick preset's model, batch {args.batch_size}x1x32x32, float32 channels_last, eval mode, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; median of {args.repeats} alternating runs")
    for name, values in times.items():
        print(f"{name}: {statistics.median(values) * 1e3:.1f} ms")
    print(f"the same thresholds, bit for bit: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
