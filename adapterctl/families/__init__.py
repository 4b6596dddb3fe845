"""Model families as data: where each family's layers, residual sites, projections, embeddings
and attention are (``spec.py``), one entry per family (``encoders.py``, ``decoders.py``), and
the hooks that let methods act there (``hooks.py``). No transformers modeling code is copied,
so a new transformers release does not break us, and a new family is an entry plus a test."""

from __future__ import annotations

import torch.nn as nn

from ..errors import UnsupportedModelError
from .decoders import FAMILIES as _DECODERS
from .encoders import FAMILIES as _ENCODERS
from .spec import Family

FAMILIES: dict[str, Family] = {**_ENCODERS, **_DECODERS}


def family_of(model: nn.Module) -> Family:
    """The spec of a transformers model's family, or an error that lists the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; adapterctl supports {', '.join(sorted(FAMILIES))} "
            "(adding a family is one entry in adapterctl/families/ plus a test)"
        )
    return FAMILIES[model_type]
