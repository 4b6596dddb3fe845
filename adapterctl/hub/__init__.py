"""The adapter Hub: YAML cards, an index, identifiers, backends, verified downloads.

``resolve("sentiment/rotten_tomatoes@ukp")`` finds the adapter in the hubs named by
``ADAPTERCTL_HUB``, downloads it into the cache (``ADAPTERCTL_CACHE``, else
``~/.cache/adapterctl``) and returns its folder; ``AdapterModel.load_adapter`` calls it for
any name that is not a local folder.
"""

from __future__ import annotations

from .cache import Cache
from .card import read_card, validate_card
from .errors import (
    AmbiguousAdapterError, CardError, DownloadError, UnknownAdapterError, UnsafeArchiveError, WrongBackboneError,
)
from .hubs import Hub, configured_hubs, find, pull, resolve

__all__ = [
    "resolve", "find", "pull", "Hub", "configured_hubs", "Cache", "read_card", "validate_card",
    "CardError", "UnknownAdapterError", "WrongBackboneError", "AmbiguousAdapterError", "UnsafeArchiveError",
    "DownloadError",
]
