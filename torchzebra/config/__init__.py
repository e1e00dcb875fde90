"""The run configuration: every section and its checks (``sections``), YAML presets and overrides (``load_config``).
Names load on first use, so the CLI's parser reads ``PRESETS`` without loading torch."""

from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .errors import ConfigError
    from .presets import PRESETS
    from .run import RunConfig, load_config
    from .sections import (
        DataSection,
        DistillSection,
        ModelSection,
        OptimSection,
        RunSection,
        SlimSection,
        SweepSection,
        ZebraSection,
    )

__all__ = lazy_package(__name__, {
    "errors": ["ConfigError"],
    "presets": ["PRESETS"],
    "run": ["RunConfig", "load_config"],
    "sections": ["DataSection", "DistillSection", "ModelSection", "OptimSection", "RunSection",
                 "SlimSection", "SweepSection", "ZebraSection"],
})
