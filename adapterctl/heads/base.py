"""What every prediction head shares: AdapterHub's layer stack and the choice of the input row.

Each head is an ``nn.Sequential`` laid out as AdapterHub's (dropout, linear, activation, ...,
dropout, linear), so weight keys read ``heads.<name>.1.weight`` in both libraries. Its config
dict (``head_type``, ``num_labels``, ``layers``, ``activation_function``, ``label2id``, ...)
is what ``head_config.json`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..core.activation import Activation
from ..errors import AdapterConfigError


@dataclass
class HeadOutput:
    logits: torch.Tensor | tuple
    loss: torch.Tensor | None = None


class PredictionHead(nn.Sequential):
    """Base: builds AdapterHub's layer stack; subclasses pick the input, shape and loss."""

    head_type: str
    defaults: dict = {}

    def __init__(self, name: str, config: dict, model_config, default_dropout: float, pool_last: bool = False):
        super().__init__()
        self.name = name
        self.pool_last = pool_last  # a decoder's sequence representation is its last token
        self.config = {"head_type": self.head_type, **self.defaults, **config}
        for i, module in enumerate(self.build_layers(model_config, default_dropout)):
            self.add_module(str(i), module)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.data.zero_()

    @classmethod
    def complete(cls, config: dict, model_config) -> dict:
        """Fill options that default to the backbone's own (a vocabulary size, ...)."""
        return config

    def build_layers(self, model_config, default_dropout: float) -> list[nn.Module]:
        """AdapterHub's classification-style stack: (dropout, linear, activation) per extra layer,
        then dropout and the output linear."""
        c, hidden_size = self.config, model_config.hidden_size
        dropout_prob = c["dropout_prob"] if c.get("dropout_prob") is not None else default_dropout
        layers: list[nn.Module] = []
        for i in range(c["layers"]):
            layers.append(nn.Dropout(dropout_prob))
            if i < c["layers"] - 1:
                layers.append(nn.Linear(hidden_size, hidden_size))
                if c["activation_function"]:
                    layers.append(Activation(c["activation_function"]))
            else:
                layers.append(nn.Linear(hidden_size, self.out_size(), bias=c.get("bias", True)))
        return layers

    def out_size(self) -> int:
        return self.config["num_labels"]

    @property
    def id2label(self) -> dict[int, str] | None:
        label2id = self.config.get("label2id")
        return {int(i): label for label, i in label2id.items()} if label2id else None

    def cls(self, hidden: torch.Tensor, pooled: torch.Tensor | None, attention_mask=None) -> torch.Tensor:
        """The row that stands for the sequence: the pooler's output, the first token (encoders)
        or the last non-padding token (decoders; with left or right padding)."""
        if self.config.get("use_pooler"):
            if pooled is None:
                raise AdapterConfigError(f"head {self.name!r} uses the pooler, but the backbone has none")
            return pooled
        if not self.pool_last:
            return hidden[:, 0]
        if attention_mask is None:
            return hidden[:, -1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.to(positions.dtype) * positions).argmax(dim=-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The layer stack itself (``forward`` adds input selection and the loss)."""
        return nn.Sequential.forward(self, x)
