"""Language-modelling heads: ``causal_lm`` (next-token logits over the vocabulary)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..core.activation import Activation
from .base import HeadOutput, PredictionHead


class CausalLMHead(PredictionHead):
    """AdapterHub's ``CausalLMHead``: optional (linear, activation, LayerNorm) layers, then the
    projection to the vocabulary, so a checkpoint's ``lm_head`` is ``heads.<name>.0``. Labels
    are the input ids; the loss predicts each next token (``shift_labels``), -100 ignored."""

    head_type = "causal_lm"
    defaults = {"vocab_size": None, "embedding_size": None, "layers": 1, "activation_function": None,
                "layer_norm": False, "bias": False, "shift_labels": True, "label2id": None, "dropout_prob": None}

    @classmethod
    def complete(cls, config: dict, model_config) -> dict:
        embedding_size = getattr(model_config, "embedding_size", model_config.hidden_size)
        return {"vocab_size": model_config.vocab_size, "embedding_size": embedding_size, **config}

    def build_layers(self, model_config, default_dropout: float) -> list[nn.Module]:
        c = self.config
        layers: list[nn.Module] = []
        for i in range(c["layers"] - 1):
            layers.append(nn.Linear(model_config.hidden_size if i == 0 else c["embedding_size"], c["embedding_size"]))
            if c["activation_function"]:
                layers.append(Activation(c["activation_function"]))
            if c["layer_norm"]:
                layers.append(nn.LayerNorm(c["embedding_size"], eps=getattr(model_config, "layer_norm_eps", 1e-12)))
        layers.append(nn.Linear(c["embedding_size"], c["vocab_size"], bias=c["bias"]))
        return layers

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(hidden)
        loss = None
        if labels is not None:
            if self.config["shift_labels"]:
                logits_for_loss, labels = logits[:, :-1], labels[:, 1:]
            else:
                logits_for_loss = logits
            loss = F.cross_entropy(logits_for_loss.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return HeadOutput(logits, loss)
