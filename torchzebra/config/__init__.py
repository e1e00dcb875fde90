"""The run configuration: every section and its checks (``sections``), YAML presets and overrides (``load_config``).
Names load on first use, so the CLI's parser reads ``PRESETS`` without loading torch."""

from .._lazy import lazy_package

__all__ = lazy_package(__name__, {
    "presets": ["PRESETS"],
    "run": ["RunConfig", "load_config"],
    "sections": ["ConfigError", "DataSection", "DistillSection", "ModelSection", "OptimSection", "RunSection",
                 "SlimSection", "SweepSection", "ZebraSection"],
})
