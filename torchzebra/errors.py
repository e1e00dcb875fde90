"""The project's own error type: bad input or a missing resource that the user can fix.

The ``zebra`` command prints a ``ZebraError`` as one line (``zebra <verb>: error: ...``) and lets every other
exception raise with its traceback, so a bug is never mistaken for bad input. It is a ``ValueError``, so code
that catches ``ValueError`` around the library keeps working. Each area has its own subclass (``ConfigError``,
``DatasetError``, ``CheckpointError``, ``StreamError``, ``AcceleratorError``, ``ResultError``, ``ReportError``).
"""


class ZebraError(ValueError):
    """Bad input the user can fix; the message says what is wrong, where, and how to fix it."""
