"""ReFT in a model: a ``ReftLayer`` on each transformer layer (AdapterHub's ``reft_layer``)
whose forward hook intervenes on the layer's output, and a backbone pre-hook that reads where
each row's real tokens are from the attention mask (left or right padding). As in AdapterHub,
one ReFT adapter runs per pass (Stack with other methods)."""

from __future__ import annotations

from contextvars import ContextVar

import torch
import torch.nn as nn

from ...core.composition import Stack
from ...errors import AdapterConfigError
from ..base import ComposableLayer, Method, one_adapter
from .config import ReftConfig
from .layer import Reft

# This thread's last backbone pass: (first real token, end of real tokens, sequence length) from its
# 2-D mask or None, and the positions its KV cache held. Not the pass state's stash: an encoder's
# layer stack begins a nested pass of its own. Kept after the pass for layers re-run in backward.
_SPAN: ContextVar = ContextVar("adapterctl_reft_span", default=(None, 0))


class ReftLayer(ComposableLayer):
    container = "refts"

    def __init__(self, layer_idx: int, context, layer: nn.Module):
        super().__init__(layer_idx, context)
        layer.add_module("reft_layer", self)
        layer.register_forward_hook(self._after_layer)

    def _after_layer(self, layer, args, out):
        state = self.context.state
        name = one_adapter(self.active_setup(state), self.refts, "ReFT")
        if name is None:
            return None
        hidden = out[0] if isinstance(out, tuple) else out
        span, past = _SPAN.get()
        first, end, total = span or _span(None, hidden, past)
        hidden = self.refts[name](hidden, first, end, total - hidden.shape[1])
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


def _span(mask: torch.Tensor | None, hidden: torch.Tensor | None, past: int = 0):
    """Each row's first real token and the end of its real tokens, and the sequence's length
    (without a mask: all of the ``past`` cached positions and ``hidden``'s)."""
    if mask is None:
        rows, length = hidden.shape[0], past + hidden.shape[1]
        return (torch.zeros(rows, dtype=torch.long, device=hidden.device),
                torch.full((rows,), length, dtype=torch.long, device=hidden.device), length)
    first = mask.argmax(dim=1)
    return first, first + (mask == 1).sum(dim=1), mask.shape[1]


class ReftMethod(Method):
    name = "reft"
    supported_blocks = (Stack,)
    containers = ("refts",)

    def add(self, name: str, config: ReftConfig) -> None:
        if self.host.family.kind == "encoder-decoder":
            raise AdapterConfigError(f"ReFT is not supported on encoder-decoder models ({self.host.config.model_type}) "
                                     "yet; use it on an encoder or a decoder")
        host = self.host
        if not self.layers:
            host.backbone.register_forward_pre_hook(self._before_pass, with_kwargs=True)
        for stack, idx, layer in host.iter_layers():
            if config.layers != "all" and idx not in config.layers:
                continue
            if (stack, idx, "output") not in self.layers:
                self.layers[stack, idx, "output"] = ReftLayer(idx, host.context, layer)
            self.layers[stack, idx, "output"].refts[name] = host.like_model(Reft(config, host.hidden_size))

    def _before_pass(self, backbone, args, kwargs):
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        _SPAN.set((_span(mask, None) if mask is not None and mask.dim() == 2 else None,
                   cache.get_seq_length() if cache is not None else 0))
