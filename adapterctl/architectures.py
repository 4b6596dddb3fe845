"""Where things are in each supported model family: one table entry per family.

Adapters attach by hooks at *sites*. A site is a sub-layer whose output ``h`` joins the
residual stream ``x`` as ``layer_norm(h + x)``; the adapter layer replaces that step. The
table names, relative to one transformer layer, the module that outputs ``h``, the module
whose input carries ``x``, and the LayerNorm. Nothing of transformers' modeling code is
copied, so a new transformers release does not break us, and a new family is an entry here
plus a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .errors import UnsupportedModelError


@dataclass(frozen=True)
class Site:
    """One adapter location in a layer: ``layer_norm(output(...) + residual)``."""

    output: str  # module whose output (first element if a tuple) is the sub-layer's output h
    residual: str  # module whose call receives the residual stream x ("" = the layer itself)
    residual_arg: tuple[str, int]  # x's keyword name and position in that call
    layer_norm: str  # the LayerNorm applied to h + x
    container: str  # where the adapter modules live (AdapterHub's key prefix inside the layer)


@dataclass(frozen=True)
class Family:
    """A model family: its layers, its two adapter sites, its embeddings and attention."""

    layers: str  # path of the ModuleList of transformer layers inside the base model
    sites: dict  # {"mh_adapter": Site, "output_adapter": Site}
    embeddings: str
    attention: str  # the self-attention core inside a layer; its training flag gates attention-probability dropout
    qkv: tuple[str, str, str]  # query, key, value projections inside a layer (for LoRA-like methods)
    layer_input: tuple[str, int] = ("hidden_states", 0)  # a layer's hidden-states argument: name, position


_BERT_LIKE = Family(
    layers="encoder.layer",
    sites={
        "mh_adapter": Site(
            output="attention.output.dropout",
            residual="attention.output",
            residual_arg=("input_tensor", 1),
            layer_norm="attention.output.LayerNorm",
            container="attention.output",
        ),
        "output_adapter": Site(
            output="output.dropout",
            residual="output",
            residual_arg=("input_tensor", 1),
            layer_norm="output.LayerNorm",
            container="output",
        ),
    },
    embeddings="embeddings",
    attention="attention.self",
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
)

_DISTILBERT = Family(
    layers="transformer.layer",
    sites={
        "mh_adapter": Site(
            output="attention",
            residual="",
            residual_arg=("hidden_states", 0),
            layer_norm="sa_layer_norm",
            container="attention_adapters",
        ),
        "output_adapter": Site(
            output="ffn",
            residual="ffn",
            residual_arg=("input", 0),
            layer_norm="output_layer_norm",
            container="output_adapters",
        ),
    },
    embeddings="embeddings",
    attention="attention",
    qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
)

FAMILIES: dict[str, Family] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": _DISTILBERT,
}


def family_of(model: nn.Module) -> Family:
    """The table entry for a transformers model, or an error that lists what is supported."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; adapterctl supports {', '.join(sorted(FAMILIES))} "
            "(adding a family is one entry in adapterctl/architectures.py plus a test)"
        )
    return FAMILIES[model_type]


def get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root
