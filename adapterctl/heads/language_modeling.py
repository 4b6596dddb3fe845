"""Language-modelling heads: ``causal_lm`` (next-token logits over the vocabulary) and
``seq2seq_lm`` (an encoder-decoder's decoder: logits for the labels themselves, unshifted)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.activation import Activation
from .base import HeadOutput, PredictionHead


class CausalLMHead(PredictionHead):
    """AdapterHub's ``CausalLMHead``: optional (linear, activation, LayerNorm) layers, then the
    projection to the vocabulary, so a checkpoint's ``lm_head`` is ``heads.<name>.0``. Labels
    are the input ids; the loss predicts each next token (``shift_labels``), -100 ignored.
    ``inverse`` (set by the model) maps the projection's input back through the active
    invertible (MAD-X) block, ``rev=True``, as AdapterHub's LM heads do; a pre-hook on the
    projection, so generate(), which calls that Linear alone, runs it too."""

    head_type = "causal_lm"
    defaults = {"vocab_size": None, "embedding_size": None, "layers": 1, "activation_function": None,
                "layer_norm": False, "bias": False, "shift_labels": True, "label2id": None, "dropout_prob": None}

    def __init__(self, name: str, config: dict, model_config, default_dropout: float, pool_last: bool = False):
        super().__init__(name, config, model_config, default_dropout, pool_last)
        self.inverse = None
        self[-1].register_forward_pre_hook(lambda module, args: None if self.inverse is None else (
            self.inverse(args[0]), *args[1:]))

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

    def tie(self, embeddings: nn.Embedding) -> None:
        """Share the vocabulary projection's weight with the input embeddings (a config that ties
        them); the weight is still written to the head's file, as AdapterHub does."""
        self[-1].weight = embeddings.weight

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


class Seq2SeqLMHead(CausalLMHead):
    """AdapterHub's ``Seq2SeqLMHead``: the causal LM head over the decoder's outputs, labels not
    shifted (the decoder's inputs are the labels shifted right, ``decoder_inputs``). On T5 with
    tied embeddings the decoder's output is scaled by ``d_model ** -0.5`` first, as T5 does."""

    head_type = "seq2seq_lm"
    defaults = {**CausalLMHead.defaults, "shift_labels": False}

    def __init__(self, name: str, config: dict, model_config, default_dropout: float, pool_last: bool = False):
        super().__init__(name, config, model_config, default_dropout, pool_last)
        t5 = model_config.model_type in ("t5", "mt5") and getattr(model_config, "tie_word_embeddings", False)
        self.input_scale = model_config.d_model ** -0.5 if t5 else None

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **kwargs):
        if self.input_scale is not None:
            hidden = hidden * self.input_scale
        return super().forward(hidden, pooled, attention_mask, labels, **kwargs)


def decoder_inputs(labels: torch.Tensor, model_config) -> torch.Tensor:
    """The decoder's inputs for ``labels``: shifted right behind the decoder's start token, the
    ignored positions (-100) as padding (T5's ``_shift_right``, BART's ``shift_tokens_right``).
    mBART has no start token: each row starts with its own last token (its language id), as its
    ``shift_tokens_right`` does."""
    pad = model_config.pad_token_id
    labels = labels.masked_fill(labels == -100, pad)
    start = model_config.decoder_start_token_id
    if start is None:
        last = labels.ne(pad).sum(dim=1, keepdim=True) - 1
        start = labels.gather(1, last).squeeze(1)
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start
    return shifted
