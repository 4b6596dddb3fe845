"""Prefix tuning's modules, and the layer that prepends prefixes to one attention layer's keys
and values.

Weight names are AdapterHub's (``methods/prefix_tuning.py`` of ``adapters`` 1.3): one pool per
model, ``<base>.prefix_tuning.prefix_tunings.<name>.<location>.{wte,control_trans}...``, which
computes the keys and values of every layer at that location at once, and per attention layer the
gates ``<attention>.prefix_tuning.prefix_gates.<name>.{weight,bias}`` (``use_gating``). Locations
are AdapterHub's: ``self_prefix`` (encoders', decoders' and an encoder-decoder's decoder
self-attention), ``encoder_prefix`` (an encoder-decoder's encoder) and ``cross_prefix`` (its
decoder's cross-attention).

The prefixes enter where transformers' attention modules call their attention function
(``attention.py``): after the key/value projections, RoPE and the KV cache, so a cache never
holds a prefix, generation with a cache equals generation without, and decoders' prefixes are
not rotated (as in AdapterHub). A composition flows through ``PrefixState``: each adapter puts
its prefix in front (``Stack(a, b)``: b's, then a's, then the sequence's), and a slice of rows
(Parallel, BatchSplit) gets its own.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core import composer
from ...core.activation import Activation
from ..base import ComposableLayer, seeded
from .config import PrefixTuningConfig

class _Prefix(nn.Module):
    """One location's prefix for all ``n_layers`` layers that have it."""

    def __init__(self, config: PrefixTuningConfig, n_layers: int, n_heads: int, head_dim: int):
        super().__init__()
        self.shape = (config.prefix_length, n_layers, 2, n_heads, head_dim)
        self.dropout = nn.Dropout(config.dropout)

    def flat(self) -> torch.Tensor:
        """Every layer's keys and values, in AdapterHub's flat order (length, layer, key/value, head, dim)."""
        raise NotImplementedError

    def key_values(self) -> torch.Tensor:
        """``(n_layers, 2, n_heads, prefix_length, head_dim)``: each layer's keys (0) and values (1),
        before dropout (applied per row where the layer uses them, as AdapterHub drops per row)."""
        return self.flat().view(self.shape).permute(1, 2, 3, 0, 4)


class PrefixTuning(_Prefix):
    """The reparametrized prefix: ``wte`` embeddings through an MLP to all layers' keys and values."""

    def __init__(self, config: PrefixTuningConfig, n_layers: int, n_heads: int, head_dim: int, hidden_size: int):
        super().__init__(config, n_layers, n_heads, head_dim)
        with seeded(config.init_weights_seed):
            self.wte = nn.Embedding(config.prefix_length, hidden_size)
            self.control_trans = nn.Sequential(
                nn.Linear(hidden_size, config.bottleneck_size),
                Activation(config.non_linearity),
                nn.Linear(config.bottleneck_size, n_layers * 2 * n_heads * head_dim),
            )

    def flat(self) -> torch.Tensor:
        return self.control_trans(self.wte.weight).reshape(-1)


class FlatPrefixTuning(_Prefix):
    """The prefix learned directly (``flat=True``, or an ejected ``PrefixTuning``)."""

    def __init__(self, config: PrefixTuningConfig, n_layers: int, n_heads: int, head_dim: int,
                 values: torch.Tensor | None = None):
        super().__init__(config, n_layers, n_heads, head_dim)
        if values is None:
            with seeded(config.init_weights_seed):
                values = torch.randn(config.prefix_length * n_layers * 2 * n_heads * head_dim)
        self.control_trans = nn.Parameter(values)

    def flat(self) -> torch.Tensor:
        return self.control_trans


class PrefixTuningPool(nn.Module):
    """Every prefix adapter's modules, at AdapterHub's place ``<base>.prefix_tuning``; the layers
    read each adapter's keys and values from here, computed once per pass (when it begins)."""

    def __init__(self):
        super().__init__()
        self.prefix_tunings = nn.ModuleDict()

    def key_values(self, name: str, location: str, stash: dict) -> torch.Tensor:
        key = ("prefix_tuning", name, location)
        if key not in stash:
            stash[key] = self.prefix_tunings[name][location].key_values()
        return stash[key]


class PrefixState(NamedTuple):
    """What flows through a composition at one attention layer."""

    key: torch.Tensor  # (rows, heads, prefix + sequence, dim)
    value: torch.Tensor
    visible: torch.Tensor  # (rows, prefix) bool: False where a shorter slice's prefix was padded
    hidden: torch.Tensor | None  # the attention's input, for gates


class PrefixTuningLayer(ComposableLayer):
    """The prefix adapters of one attention layer: which slot of each adapter's pool output at
    this ``location`` is this layer's (``prefixes``) and their gates (``prefix_gates``, AdapterHub's keys)."""

    container = "prefix_gates"

    def __init__(self, layer_idx: int, context, pool: PrefixTuningPool, attention: nn.Module, location: str):
        super().__init__(layer_idx, context)
        object.__setattr__(self, "pool", pool)  # the backbone's module, not this layer's
        self.location = location
        self.prefixes: dict[str, int] = {}
        attention.add_module("prefix_tuning", self)
        attention.register_forward_pre_hook(self._capture_input, with_kwargs=True)

    @property
    def adapter_modules(self) -> dict:
        """The adapters with a prefix here (gates exist only with ``use_gating``)."""
        return self.prefixes

    def _capture_input(self, attention, args, kwargs):
        state = self.context.state
        if self.prefix_gates and state.setup is not None:
            state.stash[(id(self), "hidden")] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def extend(self, key: torch.Tensor, value: torch.Tensor) -> PrefixState | None:
        """Keys and values with the setup's prefixes in front, or ``None`` if none runs here."""
        state = self.context.state
        setup = self.active_setup(state)
        if setup is None:
            return None
        start = PrefixState(key, value, key.new_ones((key.shape[0], 0), dtype=torch.bool),
                            state.stash.get((id(self), "hidden")))
        out = composer.compose(self, setup, start)
        return out if out is not None and out.visible.shape[1] else None

    # -- the composer's operations ---------------------------------------------------------

    def compose_single(self, name: str, state: PrefixState) -> PrefixState:
        pair = self.pool.key_values(name, self.location, self.context.state.stash)[self.prefixes[name]]
        rows, length = state.key.shape[0], pair.shape[2]
        dropout = self.pool.prefix_tunings[name][self.location].dropout
        keys, values = (dropout(t.to(state.key.dtype).expand(rows, -1, -1, -1)) for t in pair)
        if name in self.prefix_gates:
            gate = torch.sigmoid(self.prefix_gates[name](state.hidden)).mean(dim=1)  # (rows, 1 or 2)
            keys = keys * gate[:, 0].view(-1, 1, 1, 1)
            values = values * gate[:, -1].view(-1, 1, 1, 1)
        return PrefixState(torch.cat([keys, state.key], dim=2), torch.cat([values, state.value], dim=2),
                           torch.cat([state.visible.new_ones((rows, length)), state.visible], dim=1), state.hidden)

    def concat(self, states: list[PrefixState], dim: int) -> PrefixState:
        """Row slices joined; shorter prefixes padded in front, those positions invisible."""
        longest = max(s.visible.shape[1] for s in states)
        pad = [longest - s.visible.shape[1] for s in states]
        hidden = [s.hidden for s in states]
        return PrefixState(
            torch.cat([F.pad(s.key, (0, 0, n, 0)) for s, n in zip(states, pad)]),
            torch.cat([F.pad(s.value, (0, 0, n, 0)) for s, n in zip(states, pad)]),
            torch.cat([F.pad(s.visible, (n, 0), value=False) for s, n in zip(states, pad)]),
            torch.cat(hidden) if all(h is not None for h in hidden) else None,
        )


def with_prefix_mask(mask: torch.Tensor | None, visible: torch.Tensor, q_len: int, kv_len: int,
                     causal: bool) -> torch.Tensor | None:
    """The attention mask grown by the prefix positions in front: visible to every query (where
    ``visible``). ``mask``: transformers' 4-D mask (bool: True attends; float: added to the
    scores), or ``None`` for none (``causal``: sdpa's implicit causal mask, made explicit here)."""
    rows, length = visible.shape
    if mask is None:
        if not (causal and q_len > 1) and bool(visible.all()):
            return None
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=visible.device)
        if causal and q_len > 1:
            mask = mask.tril(kv_len - q_len)
        mask = mask[None, None]
    if mask.dtype == torch.bool:
        prefix = visible
    else:
        prefix = torch.zeros(visible.shape, dtype=mask.dtype, device=mask.device)
        prefix = prefix.masked_fill(~visible, torch.finfo(mask.dtype).min)
    heads, queries = mask.shape[1], mask.shape[2]
    prefix = prefix[:, None, None, :].expand(rows, heads, queries, length)
    return torch.cat([prefix, mask.expand(rows, -1, -1, -1)], dim=-1)
