"""A named non-linearity module, shared by adapters and heads."""

from __future__ import annotations

import torch.nn as nn
from transformers.activations import get_activation


class Activation(nn.Module):
    """transformers' ACT2FN names, plus ``leakyrelu``."""

    def __init__(self, name: str):
        super().__init__()
        self.f = nn.functional.leaky_relu if name.lower() == "leakyrelu" else get_activation(name.lower())

    def forward(self, x):
        return self.f(x)
