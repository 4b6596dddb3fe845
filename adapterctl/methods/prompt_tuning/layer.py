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
        return self._insert(embedded, self.prompt_embedding.weight.to(embedded.dtype).expand(embedded.shape[0], -1, -1))

    def __len__(self) -> int:
        return self.prompt_embedding.num_embeddings

    def _insert(self, sequence: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        if self.combine == "prefix":
            return torch.cat([prompt, sequence], dim=1)
        return torch.cat([sequence[:, :1], prompt, sequence[:, 1:]], dim=1)

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The 2-D attention mask with the prompt's positions visible."""
        return self._insert(mask, mask.new_ones((mask.shape[0], len(self))))

    def extend_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """A decoder's position ids with the prompt's: the sequence's after it move on by its length."""
        at = 0 if self.combine == "prefix" else 1
        start = positions[:, :1] if at else torch.zeros_like(positions[:, :1])
        prompt = start + at + torch.arange(len(self), device=positions.device)
        return self._insert(torch.cat([positions[:, :at], positions[:, at:] + len(self)], dim=1), prompt)

    def remove(self, hidden: torch.Tensor) -> torch.Tensor:
        """The sequence's positions of ``hidden`` (a decoder's output), the prompt's dropped."""
        at = 0 if self.combine == "prefix" else 1
        return torch.cat([hidden[:, :at], hidden[:, at + len(self):]], dim=1)


def repeat_to(ids: list[int], length: int) -> list[int]:
    """Token ids repeated (AdapterHub's rule for a short ``prompt_init_text``) and cut to ``length``."""
    return (ids * math.ceil(length / len(ids)))[:length]
