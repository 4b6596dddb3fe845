"""Where prefixes enter attention: an attention function wrapped around transformers' own.

transformers 5's attention modules (BERT's, Llama's, ...) compute keys and values (RoPE and the
KV cache included) and then call the function that ``config._attn_implementation`` names in
``ALL_ATTENTION_FUNCTIONS``. While a model holds prefix adapters, its config names
``adapterctl_prefix_<inner>``: our function prepends the prefixes of the module's
``prefix_tuning`` layer to the keys and values, grows the mask to match, and calls ``<inner>``
(sdpa or eager). The masks are made as for ``<inner>`` (registered under our name in
``ALL_MASK_ATTENTION_FUNCTIONS``). No modeling code is copied or patched; a module without
prefixes in the running setup goes straight to ``<inner>``.

T5 adds a relative-position bias to the scores, computed by its first layer for the keys it had
and passed on. AdapterHub's T5 attention computes that bias after the prefix is in place (the
prefix at key positions ``0 .. P-1``, the sequence after it) and a layer reuses the previous
layer's bias only when its keys are as many, else computes one itself, with relative positions
only in the first layer (the others have no bias table: zeros). ``_t5_position_bias`` follows
that rule, so T5's outputs match AdapterHub's; in a BatchSplit, per row.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from ...errors import AdapterConfigError
from .layer import PrefixTuningLayer, with_prefix_mask

PREFIX = "adapterctl_prefix_"
INNER = ("sdpa", "eager")
# T5: per stack and attention kind, the key length and bias of the last layer that ran (AdapterHub's chain)
_T5_BIAS: ContextVar[dict | None] = ContextVar("adapterctl_t5_bias", default=None)


def _inner_function(inner: str, module):
    if inner == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    return sys.modules[type(module).__module__].eager_attention_forward  # the modeling file's own, as transformers picks


def _attention(inner: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        function = _inner_function(inner, module)
        layer = module._modules.get("prefix_tuning")
        state = layer.extend(key, value) if isinstance(layer, PrefixTuningLayer) else None
        if "position_bias" in kwargs:  # T5
            prefix, padding = (state.visible.shape[1], (~state.visible).sum(dim=1)) if state is not None else (0, None)
            kwargs["position_bias"] = _t5_position_bias(module, query, key.shape[2], prefix, padding,
                                                        kwargs["position_bias"])
        if state is None:
            return function(module, query, key, value, attention_mask, **kwargs)
        causal = kwargs.get("is_causal")
        causal = inner == "sdpa" and (getattr(module, "is_causal", True) if causal is None else causal)
        mask = with_prefix_mask(attention_mask, state.visible, query.shape[2], key.shape[2], causal)
        return function(module, query, state.key, state.value, mask, **kwargs)

    return attention


def _t5_position_bias(module, query, keys: int, prefix: int, padding: torch.Tensor | None,
                      given: torch.Tensor | None) -> torch.Tensor | None:
    """The bias AdapterHub's T5 adds at this attention layer with ``prefix`` slots in front of
    the sequence's ``keys`` (cache included); ``given``: transformers' (for ``keys``). ``padding``
    (per row): how many of a row's slots pad a shorter prefix (BatchSplit); such a row gets the bias
    it gets alone, after its padding (AdapterHub's shorter rows attend to their padding instead)."""
    if given is None:
        return None
    total = keys + prefix
    lengths = [total] if padding is None or not bool(padding.any()) else (total - padding).tolist()
    chain = dict(_T5_BIAS.get() or {})
    where = (id(module.config), module.is_decoder, module.is_causal)  # encoder, decoder self-, cross-attention
    first = module.has_relative_attention_bias or module.layer_idx == 0
    last = None if first else chain.get(where)  # the previous layer's, per row (or one for all rows)
    if last is not None and len(last) != len(lengths):
        if len(last) == 1:
            last = last * len(lengths)
        elif len(lengths) == 1:
            lengths = lengths * len(last)
        else:
            last = None
    made = {}

    def bias_for(length: int, previous: torch.Tensor | None) -> torch.Tensor:
        if previous is not None and previous.shape[-1] == length:
            return previous
        if length == keys and (first or last is None):
            return given
        if length not in made:
            if module.has_relative_attention_bias:
                past = keys - query.shape[2]  # self-attention: the cached positions before this chunk
                made[length] = module.compute_bias(query.shape[2], length, device=query.device, past_seen_tokens=past)
            else:
                made[length] = given.new_zeros((1, given.shape[1], query.shape[2], length))
        return made[length]

    biases = [bias_for(n, None if last is None else last[i]) for i, n in enumerate(lengths)]
    chain[where] = biases
    _T5_BIAS.set(chain)
    if all(b is biases[0] for b in biases) and biases[0].shape[-1] == total:
        return biases[0]
    return torch.cat([F.pad(b, (total - b.shape[-1], 0)) for b in biases])


for _inner in INNER:
    AttentionInterface.register(PREFIX + _inner, _attention(_inner))
    AttentionMaskInterface.register(PREFIX + _inner, ALL_MASK_ATTENTION_FUNCTIONS[_inner])


def _configs(backbone) -> list:
    """The configs its attention modules read: the backbone's, and T5's stacks' own copies."""
    found = {id(backbone.config): backbone.config}
    for module in backbone.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            found.setdefault(id(config), config)
    return list(found.values())


def install(backbone) -> None:
    """Route the model's attention through the prefix function (once per model)."""
    for config in _configs(backbone):
        current = config._attn_implementation
        if current.startswith(PREFIX):
            continue
        if current not in INNER:
            raise AdapterConfigError(
                f"prefix tuning runs with attn_implementation 'sdpa' or 'eager', and this model uses {current!r}; "
                "load the backbone with attn_implementation='sdpa'"
            )
        config._attn_implementation = PREFIX + current


def uninstall(backbone) -> None:
    """Back to transformers' own function (the model's last prefix adapter is gone)."""
    for config in _configs(backbone):
        current = config._attn_implementation
        if current.startswith(PREFIX):
            config._attn_implementation = current[len(PREFIX):]
