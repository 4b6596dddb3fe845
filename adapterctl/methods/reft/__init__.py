"""ReFT (AdapterHub's ``ReftConfig``, ``architecture: "reft"``): LoReFT, NoReFT and DiReFT
interventions on the hidden states of chosen positions after each layer."""

from ...core.registry import register_method
from .config import ReftConfig

register_method("reft", ReftConfig, "adapterctl.methods.reft.model:ReftMethod", architecture="reft")

__all__ = ["ReftConfig"]
