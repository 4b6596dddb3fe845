"""ReFT in a model: a ``ReftLayer`` on each transformer layer (AdapterHub's ``reft_layer``)
whose forward hook intervenes on the layer's output, and a pre-hook on the backbone (on an
encoder-decoder: on each stack) that reads where each row's real tokens are from the attention
mask (left or right padding). As in AdapterHub, one ReFT adapter runs per pass (Stack with
other methods).

Encoder-decoders: layers of both stacks, numbered on across them (``layers``), as AdapterHub's.
The encoder's positions come from its mask; the decoder's from its own tokens (its mask, if
given). AdapterHub's decoder reuses the positions it found in the encoder instead: the same
positions for ``prefix_positions`` when the encoder's input is right-padded (seq2seq batches
are), an index error for ``suffix_positions``. Its cached generation also intervenes on every new
token (each step's first position); ours on the sequence's first positions, as without a cache."""

from __future__ import annotations

from contextvars import ContextVar
from functools import partial

import torch
import torch.nn as nn

from ...core.composition import Stack
from ..base import ComposableLayer, Method, one_adapter
from .config import ReftConfig
from .layer import Reft

# This thread's last pass of each layer stack: {stack: ((first real token, end of real tokens,
# sequence length) from its 2-D mask or None, the positions its KV cache held)}. Not the pass
# state's stash: an encoder's layer stack begins a nested pass of its own. Kept after the pass for
# layers re-run in backward. Never mutated: each pass sets a new dict.
_SPAN: ContextVar = ContextVar("adapterctl_reft_span", default={})


class ReftLayer(ComposableLayer):
    container = "refts"

    def __init__(self, layer_idx: int, context, layer: nn.Module, stack: str):
        super().__init__(layer_idx, context)
        self.stack = stack
        layer.add_module("reft_layer", self)
        layer.register_forward_hook(self._after_layer)

    def _after_layer(self, layer, args, out):
        state = self.context.state
        name = one_adapter(self.active_setup(state), self.refts, "ReFT")
        if name is None:
            return None
        hidden = out[0] if isinstance(out, tuple) else out
        span, past = _SPAN.get().get(self.stack, (None, 0))
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
        host = self.host
        if not self.layers:
            for stack, module in self._stack_owners():
                module.register_forward_pre_hook(partial(_before_pass, stack), with_kwargs=True)
        for stack, idx, layer in host.iter_layers():
            if config.layers != "all" and idx not in config.layers:
                continue
            if (stack, idx, "output") not in self.layers:
                self.layers[stack, idx, "output"] = ReftLayer(idx, host.context, layer, stack)
            self.layers[stack, idx, "output"].refts[name] = host.like_model(Reft(config, host.hidden_size))

    def _stack_owners(self):
        """Where each stack's pass begins: the backbone, or an encoder-decoder's encoder and decoder."""
        backbone, stacks = self.host.backbone, self.host.family.stacks
        if self.host.family.kind != "encoder-decoder":
            return [(next(iter(stacks)), backbone)]
        return [(name, backbone.get_submodule(spec.path.rpartition(".")[0])) for name, spec in stacks.items()]


def _before_pass(stack: str, module, args, kwargs):
    mask = kwargs.get("attention_mask")
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    span = _span(mask, None) if mask is not None and mask.dim() == 2 else None
    _SPAN.set({**_SPAN.get(), stack: (span, cache.get_seq_length() if cache is not None else 0)})
