"""The ``zebra`` command line: train, eval, run, slim, prune, calibrate, export, estimate, import, sweep and
report.

Bad input is one line on stderr, never a traceback. The parser (``parser.py``) is torch-free, so help is
instant; the verbs (``verbs.py``) load torch and the engine once the arguments parse.
"""

from __future__ import annotations

import sys

from ..errors import ZebraError
from .parser import build_parser
from .preflight import preflight

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zebra`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        preflight(args)
    except ZebraError as error:
        print(f"zebra {args.command}: error: {error}", file=sys.stderr)
        return 2
    from . import verbs  # torch, the engine and the reports: only now that the arguments are good

    return verbs.dispatch(args)
