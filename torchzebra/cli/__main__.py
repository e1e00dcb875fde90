"""``python -m torchzebra.cli``: the ``zebra`` command (torchrun starts its workers this way)."""

import sys

from . import main

sys.exit(main())
