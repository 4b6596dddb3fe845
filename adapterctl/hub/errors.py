"""The Hub's errors; all are ``AdapterError`` so the CLI prints them as one line."""

from __future__ import annotations

from ..errors import AdapterConfigError, AdapterError, AdapterNotFoundError, CorruptFileError, IncompatibleAdapterError


class CardError(AdapterConfigError):
    """A Hub card that is not valid YAML or misses or mistypes a field (the message names it)."""


class UnknownAdapterError(AdapterNotFoundError):
    """An identifier that no configured hub knows (the message lists the nearest candidates)."""


class WrongBackboneError(UnknownAdapterError, IncompatibleAdapterError):
    """An identifier the hubs hold, but only for other backbones (model type or hidden size)."""


class AmbiguousAdapterError(AdapterError, LookupError):
    """An identifier that matches several adapters (the message lists them and how to choose)."""


class UnsafeArchiveError(CorruptFileError):
    """An archive entry that would escape its folder, or is a link or a device."""


class DownloadError(AdapterError, OSError):
    """A download that failed after its retries (network, HTTP status, or an incomplete body)."""
