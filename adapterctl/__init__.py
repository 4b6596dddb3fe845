"""adapterctl: train, compose and share adapters for transformer models."""

__version__ = "0.1.0"

from .composition import Average, BatchSplit, Fuse, Parallel, Split, Stack  # noqa: E402
from .config import BnConfig, config_hash, load_config  # noqa: E402
from .errors import (  # noqa: E402
    AdapterConfigError,
    AdapterError,
    AdapterNotFoundError,
    CorruptFileError,
    IncompatibleAdapterError,
    UnsupportedModelError,
)
from .model import AdapterModel  # noqa: E402

__all__ = [
    "AdapterModel", "BnConfig", "load_config", "config_hash",
    "Stack", "Fuse", "Split", "BatchSplit", "Parallel", "Average",
    "AdapterError", "AdapterConfigError", "AdapterNotFoundError", "CorruptFileError",
    "IncompatibleAdapterError", "UnsupportedModelError",
]
