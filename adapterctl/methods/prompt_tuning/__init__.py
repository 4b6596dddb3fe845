"""Prompt tuning (AdapterHub's ``PromptTuningConfig``, ``architecture: "prompt_tuning"``): learned
embeddings inserted in front of the sequence, after the embedding layer."""

from ...core.registry import register_method
from .config import PromptTuningConfig

register_method("prompt_tuning", PromptTuningConfig, "adapterctl.methods.prompt_tuning.model:PromptTuningMethod",
                architecture="prompt_tuning")

__all__ = ["PromptTuningConfig"]
