"""``zebra estimate`` and the estimate of ``zebra run``: a trained model's measured traffic on accelerators, alone
or against the baseline model's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .._io import atomic_write_text
from .._numbers import signed_percent
from ..accelerator import PRESETS, Accelerator, Estimate, energy_story, estimate_layers, load_accelerators
from ..accelerator.estimate import Measured, check_batch
from ..analysis.measure import TrafficReport
from ..errors import ZebraError
from ..export import ConvLayer, conv_layers
from ..training.opening import open_checkpoint

ESTIMATE = "estimate.json"  # what `zebra run` writes into its folder: every preset at batch 1
ESTIMATE_BATCHED = "estimate-batched.json"  # and at the batch each preset's source runs


def checkpoint_rows(checkpoint: str | Path, overrides: Iterable[str] = ()) -> list[ConvLayer]:
    """The topology rows of ``checkpoint``'s model."""
    opened = open_checkpoint(checkpoint, overrides)
    return conv_layers(opened.model, opened.example_inputs())


def measure_checkpoint(checkpoint: str | Path, overrides: Iterable[str], progress: bool) -> Measured:
    """The topology rows of ``checkpoint`` and its traffic report on its test split."""
    opened = open_checkpoint(checkpoint, overrides)
    return conv_layers(opened.model, opened.example_inputs()), opened.evaluate(progress)


def estimate_checkpoint(checkpoint: str | Path, accelerators: Iterable[str | Accelerator], images: int | None = None,
                        on_chip: bool = False, overrides: Iterable[str] = (), progress: bool = True,
                        batch: int | None = None, baseline: str | Path | None = None) -> Estimate:
    """Measure ``checkpoint`` (and the ``baseline`` checkpoint, on the same images) on its test split (the first
    ``images`` of a fixed random pick if given, as ``data.test_subset`` picks them) and estimate it on each
    accelerator at ``batch`` (None: each accelerator's own)."""
    if images is not None and images < 1:
        raise ZebraError(f"--images {images} is invalid: measure at least 1 test image")
    check_batch(batch)
    accelerators = load_accelerators(accelerators)  # a bad description fails before anything is loaded
    overrides = [*overrides, *([f"data.test_subset={images}"] if images else [])]
    measured = measure_checkpoint(checkpoint, overrides, progress)
    base = None if baseline is None else measure_checkpoint(baseline, overrides, progress)
    return estimate_layers(*measured, accelerators, on_chip, batch, base)


def run_estimate(run_dir: str | Path, zebra: tuple[Path, TrafficReport], baseline: tuple[Path, TrafficReport]
                 ) -> tuple[Estimate, Estimate]:
    """The estimates of a run's trained Zebra model against its baseline, each (checkpoint, final report), on every
    preset at batch 1 and at each preset's own batch: written to ``run_dir/estimate.json`` and
    ``estimate-batched.json``, a few lines per preset printed (what ``zebra run`` does last)."""
    zebra_measured, base_measured = ((checkpoint_rows(path), report) for path, report in (zebra, baseline))
    single, batched = (estimate_layers(*zebra_measured, PRESETS, batch=batch, baseline=base_measured)
                       for batch in (1, None))
    write_estimate(Path(run_dir) / ESTIMATE, single)
    write_estimate(Path(run_dir) / ESTIMATE_BATCHED, batched)
    print("\n".join(estimate_lines(single, batched)), flush=True)
    return single, batched


def write_estimate(path: str | Path, result: Estimate) -> None:
    """``result`` as JSON at ``path`` (atomically)."""
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2))


def estimate_lines(single: Estimate, batched: Estimate) -> list[str]:
    """Per preset: the Zebra model in Zebra+ZVC against the baseline in ZVC and dense at batch 1, at the preset's own
    batch where it is larger, and the break-even bandwidth; then why the energy saving is smaller than the cut."""
    lines = ["Accelerator estimate (docs/ACCELERATORS.md), per image: the Zebra model in Zebra+ZVC against the "
             "baseline model"]
    for name, one in single.accelerators.items():
        many = batched.accelerators[name]
        for est in (one, many) if many.batch > 1 else (one,):
            zvc, dense = est.against_baseline("zebra_zvc", "zvc"), est.against_baseline("zebra_zvc", "dense")
            curves = est.curves or {}  # an estimate against a baseline always has its curves
            point = curves["break_even"]
            even = (f"below {point['dram_gbps']:.3g} GB/s" if point["dram_gbps"] is not None
                    else "at no bandwidth down to 1/256 of")
            source = " (the batch its source runs)" if est.batch > 1 else ""
            lines.append(f"{name}, batch {est.batch}{source}: {zvc['speedup']:.2f}x faster than the baseline's ZVC "
                         f"({dense['speedup']:.2f}x than its dense), energy {signed_percent(-zvc['energy_saving'])} "
                         f"({signed_percent(-dense['energy_saving'])}); {curves['margin']:.2f}x faster {even} "
                         f"(here {est.accelerator.dram_gbps:g} GB/s)")
    return [*lines, "Why the energy saving is smaller than the traffic cut:",
            *(energy_story(est) for est in single.accelerators.values())]
