"""Where prefixes enter attention: an attention function wrapped around transformers' own.

transformers 5's attention modules (BERT's, Llama's, ...) compute keys and values (RoPE and the
KV cache included) and then call the function that ``config._attn_implementation`` names in
``ALL_ATTENTION_FUNCTIONS``. While a model holds prefix adapters, its config names
``adapterctl_prefix_<inner>``: our function prepends the prefixes of the module's
``prefix_tuning`` layer to the keys and values, grows the mask to match, and calls ``<inner>``
(sdpa or eager). The masks are made as for ``<inner>`` (registered under our name in
``ALL_MASK_ATTENTION_FUNCTIONS``). No modeling code is copied or patched; a module without
prefixes in the running setup goes straight to ``<inner>``.
"""

from __future__ import annotations

import sys

from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from ...errors import AdapterConfigError
from .layer import PrefixTuningLayer, with_prefix_mask

PREFIX = "adapterctl_prefix_"
INNER = ("sdpa", "eager")


def _inner_function(inner: str, module):
    if inner == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    return sys.modules[type(module).__module__].eager_attention_forward  # the modeling file's own, as transformers picks


def _attention(inner: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        function = _inner_function(inner, module)
        layer = module._modules.get("prefix_tuning")
        state = layer.extend(key, value) if isinstance(layer, PrefixTuningLayer) else None
        if state is None:
            return function(module, query, key, value, attention_mask, **kwargs)
        causal = kwargs.get("is_causal")
        causal = inner == "sdpa" and (getattr(module, "is_causal", True) if causal is None else causal)
        mask = with_prefix_mask(attention_mask, state.visible, query.shape[2], key.shape[2], causal)
        return function(module, query, state.key, state.value, mask, **kwargs)

    return attention


for _inner in INNER:
    AttentionInterface.register(PREFIX + _inner, _attention(_inner))
    AttentionMaskInterface.register(PREFIX + _inner, ALL_MASK_ATTENTION_FUNCTIONS[_inner])


def install(config) -> None:
    """Route the model's attention through the prefix function (once per model)."""
    current = config._attn_implementation
    if current.startswith(PREFIX):
        return
    if current not in INNER:
        raise AdapterConfigError(
            f"prefix tuning runs with attn_implementation 'sdpa' or 'eager', and this model uses {current!r}; "
            "load the backbone with attn_implementation='sdpa'"
        )
    config._attn_implementation = PREFIX + current


def uninstall(config) -> None:
    """Back to transformers' own function (the model's last prefix adapter is gone)."""
    current = config._attn_implementation
    if current.startswith(PREFIX):
        config._attn_implementation = current[len(PREFIX):]
