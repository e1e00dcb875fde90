"""``zebra estimate`` and the estimate of ``zebra run``: a trained model's measured traffic on accelerators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from torch import nn

from .._io import atomic_write_text
from ..accelerator import PRESETS, Accelerator, Estimate, estimate_layers, load_accelerators
from ..data import DataSpec
from ..errors import ZebraError
from ..export import conv_layers
from ..analysis.measure import TrafficReport
from ..training.checkpoint import load_checkpoint
from ..training.trainer import build_data, evaluate, example_inputs, rebuild, resolve_device

ESTIMATE = "estimate.json"  # what `zebra run` writes into its folder


def model_estimate(model: nn.Module, spec: DataSpec, report: TrafficReport,
                   accelerators: Iterable[str | Accelerator] = PRESETS, on_chip: bool = False) -> Estimate:
    """The estimate of a prepared ``model`` for data ``spec`` from its measured ``report``."""
    device = next(model.parameters()).device
    return estimate_layers(conv_layers(model, example_inputs(spec).to(device)), report, accelerators, on_chip)


def estimate_checkpoint(checkpoint: str | Path, accelerators: Iterable[str | Accelerator], images: int | None = None,
                        on_chip: bool = False, overrides: Iterable[str] = (), progress: bool = True) -> Estimate:
    """Measure ``checkpoint`` on its test split (the first ``images`` of a fixed random pick if given, as
    ``data.test_subset`` picks them) and estimate it on each accelerator."""
    if images is not None and images < 1:
        raise ZebraError(f"--images {images} is invalid: measure at least 1 test image")
    accelerators = load_accelerators(accelerators)  # a bad description fails before anything is loaded
    overrides = [*overrides, *([f"data.test_subset={images}"] if images else [])]
    payload = load_checkpoint(checkpoint)
    model, config = rebuild(payload, overrides, f"checkpoint {checkpoint}")
    _, test_set, _ = build_data(config)
    device = resolve_device(config.device)
    model.to(device)
    report = evaluate(model, test_set, config, device, progress)
    return model_estimate(model, DataSpec(**payload.spec), report, accelerators, on_chip)


def run_estimate(run_dir: str | Path, checkpoint: str | Path, report: TrafficReport) -> Estimate:
    """The estimate of a run's trained ``checkpoint`` from its final ``report`` on every preset: written to
    ``run_dir/estimate.json``, one line per preset printed (what ``zebra run`` does last)."""
    payload = load_checkpoint(checkpoint)
    model, _ = rebuild(payload, (), f"checkpoint {checkpoint}")
    result = model_estimate(model, DataSpec(**payload.spec), report)
    write_estimate(Path(run_dir) / ESTIMATE, result)
    print("\n".join(["Accelerator estimate (docs/ACCELERATORS.md), per image:", *estimate_lines(result)]), flush=True)
    return result


def write_estimate(path: str | Path, result: Estimate) -> None:
    """``result`` as JSON at ``path`` (atomically)."""
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2))


def estimate_lines(result: Estimate, fmt: str = "zebra_zvc") -> list[str]:
    """One line per accelerator: ``fmt``'s speed-up and DRAM and total energy saving against dense."""
    return [f"{name}: {fmt} speed-up {est.speedup(fmt):.2f}x, DRAM energy -{est.saving(fmt, 'dram_energy_uj'):.1%}, "
            f"energy -{est.saving(fmt):.1%} against dense ({est.accelerator.rows}x{est.accelerator.cols} "
            f"{est.accelerator.dataflow}, {est.accelerator.dram_gbps:g} GB/s)"
            for name, est in result.accelerators.items()]
