"""Model families as data: where each family's layers, residual sites, projections, embeddings
and attention are (``spec.py``), one entry per family (``encoders.py``, ``decoders.py``), and
the hooks that let methods act there (``hooks.py``). No transformers modeling code is copied,
so a new transformers release does not break us, and a new family is an entry plus a test."""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ..errors import UnsupportedModelError
from .decoders import FAMILIES as _DECODERS
from .encoders import FAMILIES as _ENCODERS
from .seq2seq import FAMILIES as _SEQ2SEQ
from .spec import Family

FAMILIES: dict[str, Family] = {**_ENCODERS, **_DECODERS, **_SEQ2SEQ}


def family_of(model: nn.Module) -> Family:
    """The spec of a transformers model's family, or an error that lists the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; adapterctl supports {', '.join(sorted(FAMILIES))} "
            "(adding a family is one entry in adapterctl/families/ plus a test)"
        )
    if model_type == "t5" and getattr(model.config, "is_gated_act", False):
        return FAMILIES["mt5"]  # T5 v1.1 (model_type t5): mT5's gated feed-forward, wi_0 gating wi_1
    return FAMILIES[model_type]


def base_model_of(model: nn.Module) -> nn.Module:
    """The bare transformer inside a checkpoint with a head. T5's ``*ForConditionalGeneration``
    holds its embeddings, encoder and decoder itself, with no ``T5Model`` inside: one is made
    around those same modules, so the weights stay shared and the keys read ``transformer.encoder...``
    as AdapterHub's."""
    base = getattr(model, "base_model", model)
    cls = MODEL_MAPPING.get(type(getattr(model, "config", None)), None)
    if base is not model or cls is None or isinstance(model, cls):
        return base
    with torch.device("meta"):  # every child is replaced by the checkpoint's own
        base = cls(model.config)
    for name, _ in list(base.named_children()):
        setattr(base, name, getattr(model, name))
    return base.train(model.training)
