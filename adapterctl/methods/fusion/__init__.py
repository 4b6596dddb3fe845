"""AdapterFusion over bottleneck adapters: ``config`` (torch-free) and ``layer`` (the module)."""

from .config import FUSION_PRESETS, FusionConfig, load_fusion_config

__all__ = ["FUSION_PRESETS", "FusionConfig", "load_fusion_config"]
