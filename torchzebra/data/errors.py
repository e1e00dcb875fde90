"""The one error type for data that is missing or malformed: it says where, what, and how to fix it."""

from ..errors import ZebraError


class DatasetError(ZebraError):
    """A data set is missing or malformed; the message names the path, what was expected and the fix."""
