"""The argument parser of ``zebra``: torch-free, so ``zebra --help`` and every verb's ``--help`` are instant."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._defaults import CALIBRATION_IMAGES, DENSITIES, HOLDOUT_IMAGES
from ..accelerator.spec import PRESETS as ACCELERATOR_PRESETS
from ..codec.widths import WIDTHS
from ..config.presets import PRESETS
from ..core.registry import FORMATS
from ..results.methods import METHODS, slim_flows, sweep_methods


def _block_size_word(word: str) -> int | str:
    """A block size as typed: digits are a number (``4``), anything else stays a word (``map``) to be checked."""
    return int(word) if word.isdigit() else word


def _words(values: tuple[float, ...]) -> str:
    """Numbers as a command line takes them: ``0.1 0.2 1``."""
    return " ".join(f"{value:g}" for value in values)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", choices=PRESETS,
                        help="settings shipped with torchzebra: quick (CPU reference) or paper (GPU); default quick")
    parser.add_argument("--config", type=Path, help="a YAML file whose settings go on top of the preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set train.epochs=5 --set zebra.lam=0.05 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_estimate_parser(commands) -> None:
    """``zebra estimate``: a checkpoint's measured traffic as cycles, stalls and energy on accelerators."""
    a = commands.add_parser(
        "estimate", help="cycles, stalls and DRAM energy of a checkpoint's measured traffic on accelerators",
        description="Measure a checkpoint on its test split, then estimate per conv/linear layer and format "
                    "(dense, zvc, zebra, zebra_zvc) the compute cycles of a systolic array (SCALE-Sim's analytical "
                    "runtime), the DRAM bytes and memory cycles, stalls and energy; see docs/ACCELERATORS.md.")
    a.add_argument("checkpoint", type=Path, help="a last.pt written by zebra train, run, slim, prune or calibrate")
    a.add_argument("--accelerator", action="append", metavar="NAME|FILE.yaml",
                   help=f"a preset ({', '.join(ACCELERATOR_PRESETS)}) or a YAML description (repeatable; default: "
                        "every preset)")
    a.add_argument("--images", type=int, help="measure this many test images (default: the whole test split)")
    a.add_argument("--on-chip", action="store_true",
                   help="keep a map on chip (no DRAM write or read) when one copy fits in the ifmap and ofmap buffers")
    a.add_argument("--baseline", type=Path, metavar="BASE.pt",
                   help="the baseline model's checkpoint (e.g. runs/X/baseline/last.pt): measured on the same images, "
                        "in dense and ZVC; every format of the checkpoint is compared with both, across bandwidths "
                        "and batches too, with the break-even bandwidth")
    a.add_argument("--batch", type=int, metavar="N",
                   help="images per batch: weights are read once per batch, activations once per image; figures stay "
                        "per image (default: each accelerator's batch key, 1 unless its file sets it)")
    a.add_argument("--json", type=Path, help="also write the estimate as JSON here")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the checkpoint's config, e.g. --set data.root=/data")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(verb="estimate")


def _add_import_parser(commands) -> None:
    """``zebra import``: a model trained elsewhere, as a checkpoint that every verb reads."""
    m = commands.add_parser(
        "import", help="a model trained elsewhere (its weights file) as a checkpoint that every verb reads",
        description="Build the model --model names for the data's classes and channels, load WEIGHTS into it (a "
                    "state dict, a dict with one under 'state_dict' or 'model', or with --trust-pickle a whole "
                    "pickled module), refuse any mismatch in one line, measure top-1 and dense/ZVC traffic on the "
                    "test split and write a checkpoint that eval, calibrate, estimate, export, prune and train --init "
                    "read; see docs/OWN_MODEL.md.")
    _add_config_options(m)
    m.add_argument("weights", type=Path, help="the file torch.save wrote (e.g. torch.save(model.state_dict(), ...))")
    m.add_argument("--model", required=True, metavar="NAME",
                   help="torchvision:<name>, timm:<name>, one of the project's (resnet18 ...), or your own builder: "
                        "module:function or path/to/file.py:function, called with the classes, the input channels "
                        "and model.options as keywords")
    m.add_argument("--output", "-o", type=Path, required=True, help="the checkpoint to write")
    m.add_argument("--trust-pickle", dest="trust_pickle", action="store_true",
                   help="read a whole pickled module (torch.save(model, ...)); loading it runs code from the file")
    m.set_defaults(verb="import")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zebra`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="zebra", description="Zero-block regularisation of activation maps.")
    commands = parser.add_subparsers(dest="command", required=True)

    t = commands.add_parser("train", help="train (or fine-tune) one model, with or without Zebra",
                            description="Train one model; evaluate accuracy and traffic after every epoch.")
    _add_config_options(t)
    t.add_argument("--run-dir", type=Path, help="where checkpoints and metrics go (default runs/<timestamp>)")
    t.add_argument("--init", type=Path, help="fine-tune: start from the weights of this checkpoint")
    t.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/last.pt where it stopped, with the run's saved config (+ --set)")
    t.add_argument("--nproc", type=int, default=1,
                   help="train with N processes (DistributedDataParallel; gloo on CPU, NCCL on GPU) through torchrun; "
                        "data.batch_size is the global batch")
    t.set_defaults(verb="train")

    e = commands.add_parser("eval", help="accuracy and per-layer traffic of a checkpoint on the test split",
                            description="Rebuild a trained model from its checkpoint and measure it.")
    e.add_argument("checkpoint", type=Path, help="a last.pt written by zebra train or zebra run")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the checkpoint's config, e.g. --set data.root=/data --set bits=16")
    e.add_argument("--json", type=Path, help="also write the report as JSON here")
    e.add_argument("--csv", type=Path, help="also write the per-layer table as CSV here")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(verb="eval")

    r = commands.add_parser("run", help="the main job: dense baseline, Zebra fine-tune, side-by-side report",
                            description="Train the dense baseline, fine-tune it with Zebra using the same seed, "
                                        "evaluate both, and write report.md and report.json.")
    _add_config_options(r)
    r.add_argument("--run-dir", type=Path, help="output folder (default runs/<timestamp>)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in RUN_DIR, with its saved config (+ --set)")
    r.set_defaults(verb="run")

    s = commands.add_parser(
        "slim", help="Network Slimming: sparsity-train, prune, fine-tune (alone, with Zebra, or all four compared)",
        description="Network Slimming flows. slim: sparsity-train (train section, slim.s), remove slim.ratio of the "
                    "channels, fine-tune (finetune section). slim-zebra: fine-tune the pruned model with Zebra. "
                    "joint: Zebra and BN sparsity trained together, prune, fine-tune with Zebra. compare: dense "
                    "baseline, Zebra, Slimming and Slimming+Zebra side by side (top-1, params, MACs, traffic).")
    _add_config_options(s)
    s.add_argument("--flow", choices=slim_flows(), default="slim", help="which flow to run (default slim)")
    s.add_argument("--run-dir", type=Path, help="output folder (default runs/<timestamp>)")
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in RUN_DIR, with its saved config (+ --set)")
    s.set_defaults(verb="slim")

    p = commands.add_parser("prune", help="remove channels of a trained checkpoint (Network Slimming's rule)",
                            description="Plan with a global |gamma| threshold and a per-layer floor, remove the "
                                        "channels physically and write a new checkpoint; the input is never changed.")
    p.add_argument("checkpoint", type=Path, help="a last.pt written by zebra train, run or slim")
    p.add_argument("--output", "-o", type=Path, help="the pruned checkpoint to write")
    p.add_argument("--ratio", type=float, help="fraction of the BatchNorm channels to remove, in (0, 1)")
    p.add_argument("--min-channels", dest="min_channels", type=int, help="channels every layer keeps (default 1)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="BatchNorm name pattern never pruned, e.g. 'stem.*' (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the checkpoint's config")
    p.add_argument("--dry-run", action="store_true", help="print the plan only; write nothing")
    p.set_defaults(verb="prune")

    c = commands.add_parser(
        "calibrate", help="Zebra on a trained model without training: per-layer thresholds for a top-1 budget",
        description="Search per-layer thresholds on training images (each layer's cost and bytes at each kept-block "
                    "density and block size, then the allocation of most saved bytes, BatchNorm statistics "
                    "re-estimated on the masked model) for the largest Zebra+ZVC reduction whose top-1 drop on "
                    "held-out training images, plus a 95 % one-sided margin, stays within each budget; measure on "
                    "the test split; write one prepared checkpoint per budget and report.md/report.json. No training.")
    c.add_argument("checkpoint", type=Path, help="a trained model's last.pt (e.g. a dense baseline)")
    c.add_argument("--out", type=Path, required=True, help="the folder to write")
    c.add_argument("--budget", type=float, nargs="+", default=[1.0], metavar="POINTS",
                   help="top-1 points the model may lose on the test split (default 1; several: a front)")
    c.add_argument("--images", type=int, help=f"training images to calibrate on (default {CALIBRATION_IMAGES})")
    c.add_argument("--holdout", type=int,
                   help=f"other training images the budget is checked on (default {HOLDOUT_IMAGES}; one image "
                        "should be a small "
                        "fraction of the budget)")
    c.add_argument("--block-sizes", dest="block_sizes", type=_block_size_word, nargs="+", metavar="SIZE",
                   help="block sizes each layer may take, e.g. 2 4 (default: each layer keeps its own)")
    c.add_argument("--densities", type=float, nargs="+", metavar="FRACTION",
                   help=f"kept-block fractions each layer is measured at (default {_words(DENSITIES)}; more: a "
                        "finer search and a longer profile)")
    c.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="profiles to search (default 1); each after the first measures every layer again with the "
                        "others at the largest budget's allocation so far, where masked layers cost more together "
                        "than alone; each budget keeps its best allocation of the rounds (2: over twice the time)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the checkpoint's config, e.g. --set zebra.block_size=4")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(verb="calibrate")

    x = commands.add_parser("export", help="artefacts for hardware tools: SCALE-Sim topology, densities, coded maps",
                            description="Write topology.csv and layout.csv (the topology and layout files "
                                        "SCALE-Sim reads), layers.csv (every row's maps, their bytes and SCALE-Sim's "
                                        "IFMAP words), density.yaml (per-layer element and block density on the test "
                                        "split, for Sparseloop/Timeloop), timeloop/ (a Timeloop/Sparseloop problem "
                                        "file per layer) and maps/ (one codec stream per layer for chosen test "
                                        "images); with --onnx, model.onnx; see docs/EXPORTS.md.")
    x.add_argument("checkpoint", type=Path, help="a last.pt (or pruned checkpoint) written by zebra")
    x.add_argument("--out", type=Path, required=True, help="the folder to write")
    x.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3], metavar="INDEX",
                   help="test-split images whose maps are written (default 0 1 2 3)")
    x.add_argument("--format", default="zebra_zvc", choices=FORMATS,
                   help="stream format of the maps (default zebra_zvc)")
    x.add_argument("--bits", type=int, choices=WIDTHS, help="data width (default: the checkpoint's bits)")
    x.add_argument("--per-channel", action="store_true", help="one quantisation scale per channel")
    x.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set data.root=/data --set data.test_subset=1000")
    x.add_argument("--onnx", action="store_true",
                   help="also write model.onnx: the prepared model with its dynamic masks (pip install "
                        "'torchzebra[onnx]')")
    x.add_argument("--quiet", action="store_true", help="no progress bars")
    x.set_defaults(verb="export")

    _add_estimate_parser(commands)
    _add_import_parser(commands)

    w = commands.add_parser("sweep", help="a grid of fine-tunes (methods x settings) from one baseline, resumable",
                            description="Train the dense baseline once, then fine-tune every method at every grid "
                                        "point; sweep.csv and sweep.json get one row per point (top-1, reduction per "
                                        "format, per-layer densities, time). Rerun the same command to continue: "
                                        "finished points are not run again.")
    _add_config_options(w)
    w.add_argument("--grid", action="append", default=[], metavar="KEY=[V1, V2]",
                   help="a grid axis, e.g. --grid 'zebra.block_size=[1, 2, 4, 8, map]' (repeatable; or sweep.grid "
                        "in the config)")
    w.add_argument("--methods", nargs="+", choices=sweep_methods(),
                   help="; ".join(f"{name}: {METHODS[name].description}" for name in sweep_methods()))
    w.add_argument("--run-dir", type=Path, help="output folder (default runs/<timestamp>); reuse it to continue")
    w.set_defaults(verb="sweep")

    o = commands.add_parser("report", help="runs -> one self-contained HTML page and a Markdown summary",
                            description="Accuracy against bandwidth reduction with every method's Pareto front, "
                                        "per-layer traffic and pictures of real activation maps with the zeroed "
                                        "blocks, from folders written by zebra sweep, run or slim.")
    o.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    o.add_argument("--out", type=Path, required=True, help="the folder to write report.html, report.md, PNGs")
    o.add_argument("--images", type=int, default=3, help="test images drawn with their masks (default 3)")
    o.add_argument("--budget", type=float, default=1.0, help="accuracy budget in points of top-1 (default 1)")
    o.add_argument("--no-pictures", action="store_true", help="skip the activation-map pictures (no data needed)")
    o.set_defaults(verb="report")
    return parser
