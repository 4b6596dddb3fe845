"""What a family spec says: where a model's layers are and the places in each layer where
methods act. Data only; ``hooks.py`` turns it into hooks, and each family is one entry in
``encoders.py`` or ``decoders.py``.

Paths are module paths (``get_submodule``) relative to the base model (stacks, embeddings)
or to one transformer layer (everything else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

POST_LN = "post_ln"  # the layer computes LayerNorm(h + x) in a module: BERT, RoBERTa, DistilBERT
PRE_LN = "pre_ln"  # the layer adds x + h inline, no module receives h + x: Llama, GPT-2, T5


@dataclass(frozen=True)
class ResidualSite:
    """Where a sub-layer's output ``h`` joins the residual stream ``x``: bottleneck adapters
    sit here (AdapterHub's ``mh_adapter`` after attention, ``output_adapter`` after the MLP)."""

    kind: str  # POST_LN or PRE_LN
    output: str  # the module whose output (its first element, if a tuple) is h
    # the module inside the layer whose call receives x; never the layer itself, since activation
    # checkpointing re-runs a layer's forward in backward without its hooks (transformers 5)
    residual: str
    residual_arg: tuple[str, int]  # x's keyword name and position in that call
    container: str  # where the adapter modules live: AdapterHub's key prefix inside the layer
    layer_norm: str | None = None  # POST_LN: the LayerNorm applied to h + x
    # POST_LN: the layer drops h out by a function call (BART), not a module whose output we see;
    # in training h is then recovered as (h + x) - x
    dropout_fn: bool = False


@dataclass(frozen=True)
class LayerStack:
    """A ModuleList of transformer layers (an encoder's or a decoder's) and its places."""

    path: str
    attention: str  # the self-attention module; its training flag gates attention-probability dropout
    sites: dict[str, ResidualSite]  # "mh_adapter", "output_adapter"
    # LoRA-style methods: "q", "k", "v", "o" (attention) and AdapterHub's "intermediate" and
    # "output" MLP projections -> their Linear (or Conv1D) modules; a tuple: the key adapts each
    # (an encoder-decoder's q is in self- and cross-attention, as AdapterHub's selfattn_lora)
    projections: dict[str, str | tuple[str, ...]]
    layer_input: tuple[str, int] = ("hidden_states", 0)  # a layer's hidden-states argument: name, position
    # One projection computing several of the keys above side by side along its output (GPT-2's
    # c_attn: q | k | v): its path -> those keys in column order. LoRA adapts their slices.
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The config attribute that counts the groups a fused output is laid out in (GPT-NeoX: per
    # head, q_h | k_h | v_h); None: one group (GPT-2: q | k | v)
    fused_groups: str | None = None
    # Prefix tuning's places, by AdapterHub's location keys: the self-attention's is "self_prefix"
    # ("encoder_prefix" in an encoder-decoder's encoder), the decoder's cross-attention "cross_prefix"
    self_location: str = "self_prefix"
    cross_attention: str = ""  # an encoder-decoder decoder's cross-attention module


@dataclass(frozen=True)
class StaticHead:
    """How a transformers ``*For<Task>`` head maps onto our head of the same type (AdapterHub's
    static-to-flex head map): the head's config and, per index of our head's layer stack, the
    checkpoint's module there (``None``: a layer without weights)."""

    config: dict
    layers: tuple[str | None, ...]


@dataclass(frozen=True)
class Family:
    kind: str  # "encoder", "decoder" or "encoder-decoder": a decoder's classification heads pool the last token
    embeddings: str
    stacks: dict[str, LayerStack]  # in forward order; layer indices run on across them
    static_heads: dict[str, StaticHead] = field(default_factory=dict)  # by class-name suffix
    invertible_owner: str = ""  # the module holding ``invertible_adapters`` (AdapterHub's invertible_adapters_base_name)

    def static_head(self, class_name: str) -> StaticHead | None:
        return next((h for suffix, h in self.static_heads.items() if class_name.endswith(suffix)), None)
