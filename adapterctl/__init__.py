"""adapterctl: train, compose and share adapters for transformer models.

Names are imported on first use (PEP 562), so ``import adapterctl`` and the CLI's ``--help``,
``recipes`` and config errors answer without loading torch and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AdapterModel": ".core.model",
    "load_config": ".core.config", "config_hash": ".core.config", "register_method": ".core.registry",
    "BnConfig": ".methods.bottleneck.config", "ConfigUnion": ".methods.union.config",
    "PrefixTuningConfig": ".methods.prefix_tuning.config", "PromptTuningConfig": ".methods.prompt_tuning.config",
    "ReftConfig": ".methods.reft.config",
    "Stack": ".core.composition", "Fuse": ".core.composition", "Split": ".core.composition",
    "BatchSplit": ".core.composition", "Parallel": ".core.composition", "Average": ".core.composition",
    "AdapterError": ".errors", "AdapterConfigError": ".errors", "AdapterNotFoundError": ".errors",
    "CorruptFileError": ".errors", "IncompatibleAdapterError": ".errors", "UnsupportedModelError": ".errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adapterctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
