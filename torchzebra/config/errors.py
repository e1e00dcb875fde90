"""The configuration's error types, torch-free so that the command line can refuse a config file or an override
before it loads torch."""

from __future__ import annotations

from ..errors import ZebraError


class ConfigError(ZebraError):
    """A configuration file, preset or override is invalid; the message says which and how to fix it."""


class SettingError(ConfigError):
    """One setting's bad value (``key=value is invalid: ...``): the loader writes the section's path and a dot
    before it (``slim.ratio=...``); any other ``ValueError`` of a check follows the path and a colon."""
