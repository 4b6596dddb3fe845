"""LoRA and (IA)^3 (AdapterHub's ``LoRAConfig``, ``architecture: "lora"``): low-rank updates added
to, or vectors scaling, a layer's projections; both can be merged into the weights."""

from ...core.registry import register_method
from .config import LoRAConfig

register_method("lora", LoRAConfig, "adapterctl.methods.lora.model:LoRAMethod", architecture="lora")

__all__ = ["LoRAConfig"]
