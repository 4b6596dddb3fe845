"""Errors a user can act on: each message names the problem and the fix.

All derive from ``AdapterError`` so the CLI can print them as one line, without a traceback.
"""


class AdapterError(Exception):
    """Base of adapterctl's user-facing errors."""


class AdapterConfigError(AdapterError, ValueError):
    """An adapter, head, fusion or composition config that cannot be used."""


class AdapterNotFoundError(AdapterError, KeyError):
    """A name that does not refer to an adapter, head or fusion of the model."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class IncompatibleAdapterError(AdapterError, ValueError):
    """A saved adapter that was trained for another backbone (family or hidden size)."""


class CorruptFileError(AdapterError, ValueError):
    """A missing, truncated, tampered or unsafe file."""


class UnsupportedModelError(AdapterError, ValueError):
    """A backbone whose family has no entry in ``architectures``."""


class FolderBusyError(AdapterError, TimeoutError):
    """A shared folder (a hub) that another process keeps locked, or whose file system cannot lock."""
