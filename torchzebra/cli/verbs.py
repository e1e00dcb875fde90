"""What each ``zebra`` verb does; imported only after the arguments parse (it loads torch and the engine)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from .._io import atomic_write_text
from .._numbers import counted
from ..accelerator.spec import PRESETS as ACCELERATOR_PRESETS
from ..config import ConfigError, load_config
from ..config.text import parse_assignment
from ..errors import ZebraError
from ..reports.html import build_report
from ..training import TrainingError, distributed, evaluate, keep_freed_memory, open_checkpoint, train
from ..training.building import resolve_device
from ..workflows.artefacts import checkpoint_maps, export_checkpoint, onnx_checkpoint
from ..workflows.hardware import estimate_checkpoint, write_estimate
from ..workflows.importing import import_model
from ..workflows.no_training import calibrate_checkpoint, search_plan
from ..workflows.pruning import prune_checkpoint, run_slim
from ..workflows.run import new_run_dir, run_experiment
from ..workflows.sweep import run_sweep


def _config(args: argparse.Namespace):
    """The preset + file + overrides; with --resume, the run folder's own saved config + overrides."""
    if getattr(args, "resume", False):
        if args.run_dir is None:
            raise ConfigError("--resume needs --run-dir: the folder of the run to continue")
        return load_config(None, args.run_dir / "config.yaml", args.set)
    return load_config(args.preset, args.config, args.set)


def _train(args: argparse.Namespace) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _torchrun(args)
    config = _config(args)
    world, _ = distributed.setup(resolve_device(config.device))
    run_dir = distributed.broadcast(args.run_dir or new_run_dir(), world)  # one folder for every rank
    result = train(config, run_dir, init=args.init, resume=args.resume, progress=not args.quiet)
    if world.main:
        print(result.report)
        print(f"run folder: {run_dir}")
    return 0


def _torchrun(args: argparse.Namespace) -> int:
    """``zebra train --nproc N ...`` = ``torchrun --standalone --nproc-per-node N -m torchzebra.cli train ...``."""
    argv = list(args.argv)
    index = next(i for i, arg in enumerate(argv) if arg == "--nproc" or arg.startswith("--nproc="))
    del argv[index:index + (1 if "=" in argv[index] else 2)]
    if args.run_dir is None:
        argv += ["--run-dir", str(new_run_dir())]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "torchzebra.cli", *argv]
    return subprocess.run(command).returncode


def _eval(args: argparse.Namespace) -> int:
    opened = open_checkpoint(args.checkpoint, args.set)
    world, device = distributed.setup(opened.device)  # under torchrun: each rank a share, on its own GPU
    report = evaluate(opened.model.to(device), opened.test_set, opened.config, device, progress=not args.quiet)
    if not world.main:
        return 0
    print(report)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2))
    if args.csv:
        report.to_csv(args.csv)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    run_dir = Path(args.run_dir or new_run_dir())
    run_experiment(config, run_dir, resume=args.resume, progress=not args.quiet)
    build_report([run_dir], run_dir / "report", capture=functools.partial(checkpoint_maps, images=3))
    print(f"report: {run_dir / 'report.md'}")
    print("HTML report (top-1 against reduction, per-layer traffic, zebra-stripe maps): "
          f"{run_dir / 'report' / 'report.html'}")
    return 0


def _slim(args: argparse.Namespace) -> int:
    config = _config(args)
    run_dir = args.run_dir or new_run_dir()
    run_slim(config, run_dir, args.flow, resume=args.resume, progress=not args.quiet)
    print(f"report: {Path(run_dir) / 'report.md'}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for key in ("ratio", "min_channels"):
        if getattr(args, key) is not None:
            overrides.append(f"slim.{key}={getattr(args, key)}")
    if args.exclude:
        overrides.append(f"slim.exclude={json.dumps(args.exclude)}")
    if args.output is None and not args.dry_run:
        raise ConfigError("give --output FILE for the pruned checkpoint (or --dry-run to print the plan only)")
    plan = prune_checkpoint(args.checkpoint, None if args.dry_run else args.output, overrides)
    print(plan)
    if not args.dry_run:
        print(f"pruned checkpoint: {args.output} (evaluate with zebra eval, fine-tune with zebra train --init)")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    sizes = {name: getattr(args, name) for name in ("images", "holdout") if getattr(args, name) is not None}
    plan = search_plan(args.block_sizes, args.densities, args.rounds)
    calibrate_checkpoint(args.checkpoint, args.out, args.budget, overrides=args.set, progress=not args.quiet,
                         plan=plan, **sizes)
    print(f"report: {args.out / 'report.md'}; calibrated checkpoints: "
          f"{', '.join(str(args.out / f'budget-{b:g}' / 'last.pt') for b in args.budget)}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.grid:  # merged into any sweep.grid of the preset or file
        overrides.append(f"sweep.grid={json.dumps(dict(parse_assignment(a) for a in args.grid))}")
    if args.methods:
        overrides.append(f"sweep.methods={json.dumps(args.methods)}")
    config = load_config(args.preset, args.config, overrides)
    run_dir = args.run_dir or new_run_dir()
    result = run_sweep(config, run_dir, progress=not args.quiet)
    print(f"{len(result.rows)} rows: {Path(run_dir) / 'sweep.csv'} and sweep.json")
    return 0


def _report(args: argparse.Namespace) -> int:
    capture = None if args.no_pictures else functools.partial(checkpoint_maps, images=args.images)
    result = build_report(args.run_dirs, args.out, budget_points=args.budget, capture=capture)
    print(f"{counted(result['points'], 'point')} -> {args.out / 'report.html'} and report.md "
          f"({', '.join(result['figures'])})")
    return 0


def _export(args: argparse.Namespace) -> int:
    result = export_checkpoint(args.checkpoint, args.out, args.images, args.format, args.bits, args.per_channel,
                               args.set, progress=not args.quiet)
    print(f"wrote {args.out}/topology.csv, layout.csv and layers.csv ({result['topology']} layers, SCALE-Sim), "
          f"{args.out}/density.yaml ({result['layers']} activation maps), {args.out}/timeloop/ (a Timeloop/Sparseloop "
          f"file per layer), {args.out}/maps/ "
          f"({len(result['maps']['files'])} streams of {result['maps']['images']} images, {args.format}, "
          f"{result['maps']['bits']}-bit)")
    if args.onnx:
        print(f"wrote {onnx_checkpoint(args.checkpoint, args.out / 'model.onnx', args.set)} (masks computed per input)")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:  # each warning (maps uncounted, settings) as one line
        warnings.simplefilter("default")
        result = estimate_checkpoint(args.checkpoint, args.accelerator or ACCELERATOR_PRESETS, args.images,
                                     args.on_chip, args.set, progress=not args.quiet, batch=args.batch,
                                     baseline=args.baseline)
    for warning in caught:
        print(f"zebra estimate: warning: {warning.message}", file=sys.stderr)
    print(result)
    if args.json:
        write_estimate(args.json, result)
    return 0


def _import(args: argparse.Namespace) -> int:
    imported = import_model(args.weights, args.model, args.output, args.set, args.preset, args.config,
                            args.trust_pickle, progress=not args.quiet)
    print(imported.report)
    print(imported.summary())
    print(f"checkpoint: {args.output} (zebra eval, calibrate, estimate, export, prune and train --init read it)")
    return 0


VERBS = {"train": _train, "eval": _eval, "run": _run, "slim": _slim, "prune": _prune, "calibrate": _calibrate,
         "export": _export, "estimate": _estimate, "import": _import, "sweep": _sweep, "report": _report}


def dispatch(args: argparse.Namespace) -> int:
    """Run the verb of parsed ``args``. The project's own errors (bad input, a missing or malformed file) and a
    file system refusing a named path are one line on stderr and an exit code; anything else is a bug and
    raises with its traceback."""
    keep_freed_memory()  # batch after batch of large tensors: no page faults for each one (docs/PERFORMANCE.md)
    args.quiet = getattr(args, "quiet", False) or not sys.stderr.isatty()  # no bars filling a log file or a pipe
    try:
        return VERBS[args.verb](args)
    except TrainingError as error:
        print(f"zebra {args.command}: training stopped: {error}", file=sys.stderr)
        return 1
    except ZebraError as error:
        print(f"zebra {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a path the user gave: a bug, or the machine; keep its traceback
            raise
        print(f"zebra {args.command}: error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zebra {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
