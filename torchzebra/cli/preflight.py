"""What the command line checks before it imports torch: every output path the verb will write, and the
arguments whose checks need no torch, so a mistyped command is refused in one line at once and before any work."""

from __future__ import annotations

import argparse

from .._defaults import CALIBRATION_IMAGES, HOLDOUT_IMAGES
from ..config.text import parse_assignment, read_config_file
from ..workflows.arguments import check_calibration, check_output_file, check_output_folder

OUTPUT_FOLDERS = ("run_dir", "out")  # attribute names of the verbs' folders to write
OUTPUT_FILES = ("json", "csv", "output")  # and of their files


def preflight(args: argparse.Namespace) -> None:
    """Raise a ``ZebraError`` for a config file that cannot be read as YAML settings, a malformed ``--set`` or
    ``--grid``, an output path that cannot be written, or a bad ``calibrate`` argument."""
    if getattr(args, "config", None) is not None:
        read_config_file(args.config)
    for assignment in [*(getattr(args, "set", None) or []), *(getattr(args, "grid", None) or [])]:
        parse_assignment(assignment)
    if args.verb == "calibrate":
        images = CALIBRATION_IMAGES if args.images is None else args.images
        holdout = HOLDOUT_IMAGES if args.holdout is None else args.holdout
        check_calibration(args.budget, images, holdout, args.out)
    for name in OUTPUT_FOLDERS:
        if getattr(args, name, None) is not None:
            check_output_folder(getattr(args, name), f"--{name.replace('_', '-')}")
    for name in OUTPUT_FILES:
        if getattr(args, name, None) is not None:
            check_output_file(getattr(args, name), f"--{name}")
