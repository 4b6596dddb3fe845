"""Prompt tuning's config (AdapterHub's ``PromptTuningConfig``, ``architecture: "prompt_tuning"``)
and its preset ``prompt_tuning``."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError

PROMPT_INITS = ("random_uniform", "from_string")
COMBINES = ("prefix", "prefix_after_bos")


@dataclass(frozen=True)
class PromptTuningConfig(AdapterConfig):
    """Learned embeddings inserted after the embedding layer (Lester et al. 2021).

    ``prompt_length`` vectors go in front of the sequence (``combine="prefix"``) or after its
    first token (``"prefix_after_bos"``); the hidden states grow by that many positions and the
    attention mask with them. ``prompt_init``: U(-0.5, 0.5) (``random_uniform``) or the
    embeddings of ``prompt_init_text``'s tokens, repeated to the length (``from_string``; needs
    the backbone's tokenizer). Not an identity: the prompt changes every output, even at init.
    """

    prompt_length: int = 10
    prompt_init: str = "random_uniform"
    prompt_init_text: str | None = None
    combine: str = "prefix"
    init_weights_seed: int | None = None

    def __post_init__(self):
        if isinstance(self.prompt_length, bool) or not isinstance(self.prompt_length, int) or self.prompt_length < 1:
            raise AdapterConfigError(f"prompt_length must be an integer >= 1, got {self.prompt_length!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise AdapterConfigError(f"unknown prompt_init {self.prompt_init!r}; use {' or '.join(PROMPT_INITS)}")
        if self.prompt_init == "from_string" and not self.prompt_init_text:
            raise AdapterConfigError("prompt_init='from_string' needs prompt_init_text, the text whose embeddings "
                                     "start the prompt")
        if self.combine not in COMBINES:
            raise AdapterConfigError(f"unknown combine {self.combine!r}; use {' or '.join(COMBINES)}")


register_preset("prompt_tuning", PromptTuningConfig)
