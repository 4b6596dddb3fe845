"""Bottleneck adapters: Houlsby, Pfeiffer, parallel, Compacter (PHM layers), AdapterPlus, and MAD-X's
invertible blocks (AdapterHub's ``BnConfig``; ``architecture`` null in its files)."""

from ...core.registry import register_method
from .config import BnConfig

register_method("bottleneck", BnConfig, "adapterctl.methods.bottleneck.model:BottleneckMethod", architecture=None)

__all__ = ["BnConfig"]
