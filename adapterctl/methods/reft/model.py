"""ReFT in a model: a ``ReftLayer`` on each transformer layer (AdapterHub's ``reft_layer``)
whose forward hook intervenes on the layer's output, and ``begin_pass``, which reads where each
row's real tokens are from the attention mask of the backbone's pass (on an encoder-decoder: of
each stack's). As in AdapterHub, one ReFT adapter runs per pass (Stack with other methods).

Encoder-decoders: layers of both stacks, numbered on across them (``layers``), as AdapterHub's.
The encoder's positions come from its mask; the decoder's from its own tokens (its mask, if
given). AdapterHub's decoder reuses the positions it found in the encoder instead: the same
positions for ``prefix_positions`` when the encoder's input is right-padded (seq2seq batches
are), an index error for ``suffix_positions``. Its cached generation also intervenes on every new
token (each step's first position); ours on the sequence's first positions, as without a cache."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.composition import Stack
from ..base import ComposableLayer, Method, one_adapter
from .config import ReftConfig
from .layer import Reft

SPAN = "reft.span"  # the pass's stash: {(SPAN, stack): (span of the real tokens or None, cached positions)}


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
        span, past = state.stash.get((SPAN, self.stack), (None, 0))
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
        for stack, idx, layer in host.iter_layers():
            if config.layers != "all" and idx not in config.layers:
                continue
            if (stack, idx, "output") not in self.layers:
                self.layers[stack, idx, "output"] = ReftLayer(idx, host.context, layer, stack)
            self.layers[stack, idx, "output"].refts[name] = host.like_model(Reft(config, host.hidden_size))

    def begin_pass(self, state, stacks: frozenset, inputs: dict) -> None:
        """Where each row's real tokens are, for the layers of ``stacks``: from the pass's 2-D
        attention mask (left or right padding), else all its tokens after the cached ones."""
        if not self.layers or not stacks:
            return
        mask, cache = inputs.get("attention_mask"), inputs.get("cache", inputs.get("past_key_values"))
        span = _span(mask, None) if mask is not None and mask.dim() == 2 else None
        for stack in stacks:
            state.stash[SPAN, stack] = (span, cache.get_seq_length() if cache is not None else 0)
