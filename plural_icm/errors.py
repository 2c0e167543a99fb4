"""The one exception class for errors the user fixes from the message alone.

Bad data files, bad config values, a missing dataset: the message names the file, row or key and
what was expected. Such an error is printed once, without a stack trace (``HYDRA_FULL_ERROR=1``
shows the trace): it subclasses Hydra's ``CompactHydraException``, which Hydra's own reporter
prints as its message alone, in a single run and in a multirun alike. Anything else is a bug and
keeps its traceback.

Raise it with ``from None`` inside an ``except`` block: the message already says what the caught
exception said, and a chained cause would print the story twice under ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """An error whose message is the whole story (no traceback is printed for it)."""


class ConfigError(UserError, ValueError):
    """A config value (or a command-line override) outside what is accepted; names the key."""


class ResultsConflictError(UserError, RuntimeError):
    """A result directory holds results of other settings; they are never overwritten."""


class WriteError(UserError, OSError):
    """A result could not be written (disk full, quota, read-only or forbidden folder); names
    the file. Writes are atomic, so nothing half-written is left behind."""


__all__ = ["UserError", "ConfigError", "ResultsConflictError", "WriteError"]
