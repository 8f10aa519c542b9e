"""The one error type of the data package, and its warning type."""
from ..errors import VptuneError


class DataError(VptuneError, ValueError):
    """Data that cannot be used as given: a missing or unreadable file, a bad label, row or layout.

    The message always names the file (and the line, where there is one), so a user can fix the data.
    """


class FetchError(DataError):
    """A built-in data set could not be fetched from its package registry (offline, no apt/pip, ...)."""


class DataWarning(UserWarning):
    """Something about the data that the user should know but that does not stop a run (dropped files, tiny classes)."""
