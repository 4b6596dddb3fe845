"""The prompt of one prompt-tuning adapter, and how it joins the embedded sequence.

Weight names are AdapterHub's (``methods/prompt_tuning.py`` of ``adapters`` 1.3):
``<base>.prompt_tuning.prompt_tunings.<name>.prompt_embedding.weight`` (length x hidden).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..base import seeded
from .config import PromptTuningConfig

RANDOM_UNIFORM_SCALE = 0.5  # AdapterHub's (a class attribute, never saved)


class PromptTuning(nn.Module):
    def __init__(self, config: PromptTuningConfig, embedding_size: int, token_embeddings=None):
        """``token_embeddings(ids)``: the backbone's word embeddings, for ``from_string``."""
        super().__init__()
        self.combine = config.combine
        self.prompt_embedding = nn.Embedding(config.prompt_length, embedding_size)
        with torch.no_grad(), seeded(config.init_weights_seed):
            if config.prompt_init == "random_uniform":
                self.prompt_embedding.weight.uniform_(-RANDOM_UNIFORM_SCALE, RANDOM_UNIFORM_SCALE)
            else:
                self.prompt_embedding.weight.copy_(token_embeddings(config.prompt_length))

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt_embedding.weight.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        if self.combine == "prefix":
            return torch.cat([prompt, embedded], dim=1)
        return torch.cat([embedded[:, :1], prompt, embedded[:, 1:]], dim=1)

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The 2-D attention mask with the prompt's positions visible."""
        ones = mask.new_ones((mask.shape[0], self.prompt_embedding.num_embeddings))
        if self.combine == "prefix":
            return torch.cat([ones, mask], dim=1)
        return torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)


def repeat_to(ids: list[int], length: int) -> list[int]:
    """Token ids repeated (AdapterHub's rule for a short ``prompt_init_text``) and cut to ``length``."""
    return (ids * math.ceil(length / len(ids)))[:length]
