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
that rule, so T5's outputs match AdapterHub's.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar

import torch
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
        if "position_bias" in kwargs:
            total = key.shape[2] + (state.visible.shape[1] if state is not None else 0)
            kwargs["position_bias"] = _t5_position_bias(module, query, key.shape[2], total, kwargs["position_bias"])
        if state is None:
            return function(module, query, key, value, attention_mask, **kwargs)
        causal = kwargs.get("is_causal")
        causal = inner == "sdpa" and (getattr(module, "is_causal", True) if causal is None else causal)
        mask = with_prefix_mask(attention_mask, state.visible, query.shape[2], key.shape[2], causal)
        return function(module, query, state.key, state.value, mask, **kwargs)

    return attention


def _t5_position_bias(module, query, keys: int, total: int, given: torch.Tensor | None) -> torch.Tensor | None:
    """The bias AdapterHub's T5 adds at this attention layer with ``total`` keys (``keys`` of
    them the sequence's, cache included); ``given``: transformers' (for ``keys``)."""
    if given is None:
        return None
    chain = dict(_T5_BIAS.get() or {})
    where = (id(module.config), module.is_decoder, module.is_causal)  # encoder, decoder self-, cross-attention
    first = module.has_relative_attention_bias or module.layer_idx == 0
    last = None if first else chain.get(where)
    if last is not None and last.shape[-1] == total:
        bias = last
    elif total == keys and (first or last is None):
        bias = given
    elif module.has_relative_attention_bias:
        past = keys - query.shape[2]  # self-attention: the cached positions before this chunk
        bias = module.compute_bias(query.shape[2], total, device=query.device, past_seen_tokens=past)
    else:
        bias = torch.zeros((1, given.shape[1], query.shape[2], total), device=query.device, dtype=given.dtype)
    chain[where] = bias
    _T5_BIAS.set(chain)
    return bias


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
