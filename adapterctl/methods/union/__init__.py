"""Config unions: one adapter made of several methods' parts under one name (AdapterHub's
``ConfigUnion``, ``architecture: "union"``): ``seq_bn[reduction_factor=4]|lora``, a list of
configs, and the named unions ``mam`` and ``unipelt``."""

from ...core.registry import register_method
from .config import ConfigUnion

register_method("union", ConfigUnion, "adapterctl.methods.union.model:UnionMethod", architecture="union")

__all__ = ["ConfigUnion"]
