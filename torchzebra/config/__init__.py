"""The run configuration: every section, its checks, YAML presets and overrides (``load_config``).
Names load on first use, so the CLI's parser reads ``PRESETS`` without loading torch."""

from .._lazy import lazy_package

__all__ = lazy_package(__name__, {"presets": ["PRESETS"], "run": ["ConfigError", "RunConfig", "load_config"]})
