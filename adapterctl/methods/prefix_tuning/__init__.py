"""Prefix tuning (AdapterHub's ``PrefixTuningConfig``, ``architecture: "prefix_tuning"``): learned
keys and values that every attention layer attends to before the sequence's own."""

from ...core.registry import register_method
from .config import PrefixTuningConfig

register_method("prefix_tuning", PrefixTuningConfig, "adapterctl.methods.prefix_tuning.model:PrefixTuningMethod",
                architecture="prefix_tuning")

__all__ = ["PrefixTuningConfig"]
