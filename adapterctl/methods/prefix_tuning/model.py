"""Prefix tuning in a model: the pool of every adapter's prefixes on the backbone, a
``PrefixTuningLayer`` at each attention module the family spec lists (self-attention; an
encoder-decoder's decoder also its cross-attention), and attention routed through
``attention.py`` while any prefix adapter exists."""

from __future__ import annotations

import torch.nn as nn

from ...core.composition import BatchSplit, Parallel, Stack
from ...errors import AdapterConfigError
from ..base import Method
from . import attention
from .config import PrefixTuningConfig
from .layer import FlatPrefixTuning, PrefixTuning, PrefixTuningLayer, PrefixTuningPool


class PrefixTuningMethod(Method):
    name = "prefix_tuning"
    supported_blocks = (Stack, Parallel, BatchSplit)  # AdapterHub's PrefixTuningLayer (no mean for Average)
    containers = ("prefix_tunings", "prefix_gates")

    @property
    def pool(self) -> PrefixTuningPool:
        backbone = self.host.backbone
        if not hasattr(backbone, "prefix_tuning"):
            backbone.add_module("prefix_tuning", self.host.like_model(PrefixTuningPool()))
        return backbone.prefix_tuning

    def add(self, name: str, config: PrefixTuningConfig) -> None:
        host, model_config = self.host, self.host.config
        heads = getattr(model_config, "num_key_value_heads", None) or model_config.num_attention_heads
        head_dim = (getattr(model_config, "head_dim", None) or getattr(model_config, "d_kv", None)
                    or host.hidden_size // model_config.num_attention_heads)
        attention.install(self.host.backbone)
        counts: dict[str, int] = {}  # location -> layers with a prefix there, in AdapterHub's order
        for stack, idx, layer in host.iter_layers():
            if idx in config.leave_out:
                continue
            spec = host.family.stacks[stack]
            for location, path in ((spec.self_location, spec.attention), ("cross_prefix", spec.cross_attention)):
                # AdapterHub's switches: encoder_prefix, cross_prefix (a decoder's self_prefix is always there)
                if not path or not getattr(config, location, True):
                    continue
                prefix_layer = self._layer(stack, idx, layer, location, path)
                prefix_layer.prefixes[name] = counts.get(location, 0)
                counts[location] = prefix_layer.prefixes[name] + 1
                if config.use_gating:
                    gate = nn.Linear(host.hidden_size, 1 if config.shared_gating else 2)
                    nn.init.normal_(gate.weight, std=0.02)
                    prefix_layer.prefix_gates[name] = host.like_model(gate)
        if not counts:
            if not len(self.pool.prefix_tunings):
                attention.uninstall(self.host.backbone)
            raise AdapterConfigError(f"leave_out={list(config.leave_out)} leaves no layer for the prefix (encoder_prefix="
                                     f"{config.encoder_prefix}, cross_prefix={config.cross_prefix}); leave out fewer")
        group = nn.ModuleDict()
        for location, count in counts.items():
            if config.flat:
                group[location] = FlatPrefixTuning(config, count, heads, head_dim)
            else:
                group[location] = PrefixTuning(config, count, heads, head_dim, host.hidden_size)
        self.pool.prefix_tunings[name] = host.like_model(group)

    def begin_pass(self, state, stacks: frozenset, inputs: dict) -> None:
        """Each prefix this pass's layers read is computed before the first of them, as AdapterHub
        computes its prefix states when the forward begins: computed lazily inside a layer, a
        checkpointed layer's re-run in backward would find it made and save other tensors
        (torch refuses that)."""
        pool = getattr(self.host.backbone, "prefix_tuning", None)
        if pool is None:
            return
        names = state.names & pool.prefix_tunings.keys()
        for (stack, _, location), layer in self.layers.items():
            if stack in stacks:
                for name in names & layer.prefixes.keys():
                    pool.key_values(name, location, state.stash)

    def _layer(self, stack: str, idx: int, layer: nn.Module, location: str, path: str) -> PrefixTuningLayer:
        key = (stack, idx, location)
        if key not in self.layers:
            module = layer.get_submodule(path)
            self.layers[key] = PrefixTuningLayer(idx, self.host.context, self.pool, module, location)
        return self.layers[key]

    def delete(self, name: str) -> None:
        for layer in self.layers.values():
            layer.prefixes.pop(name, None)
            if name in layer.prefix_gates:
                del layer.prefix_gates[name]
        pool = self.pool
        if name in pool.prefix_tunings:
            del pool.prefix_tunings[name]
        if not len(pool.prefix_tunings):
            attention.uninstall(self.host.backbone)

    def modules(self, name: str) -> list[nn.Module]:
        """The adapter's prefix (in the pool), then its gates in layer order; none before it is added."""
        gates = [layer.prefix_gates[name] for _, layer in sorted(self.layers.items()) if name in layer.prefix_gates]
        pool = self.pool.prefix_tunings
        return [pool[name], *gates] if name in pool else gates

    def file_tensors(self, tensors: dict) -> dict:
        """AdapterHub's ``.bin`` files repeat the pool under every attention layer
        (``...attention.self.prefix_tuning.pool.prefix_tunings...``): the pool's own keys suffice."""
        return {k: v for k, v in tensors.items() if ".prefix_tuning.pool." not in k}

    def eject(self, name: str) -> None:
        """Replace the adapter's MLP by the flat prefix it computes: the same outputs, nothing to
        run per pass. Its config becomes ``flat=True`` (AdapterHub keeps ``flat: false``, so its
        ejected files do not reload)."""
        group = self.pool.prefix_tunings[name]
        config = self.host.adapters_config[name]
        if not isinstance(next(iter(group.values())), PrefixTuning):
            raise AdapterConfigError(f"{name!r} is a flat prefix already (flat=True); eject_prefix_tuning turns a "
                                     "reparametrized prefix (flat=False) into its flat form")
        for location, prefix in group.items():
            _, layers, _, heads, head_dim = prefix.shape
            flat = FlatPrefixTuning(config, layers, heads, head_dim, values=prefix.flat().detach().clone())
            flat.control_trans.requires_grad_(prefix.wte.weight.requires_grad)
            group[location] = self.host.like_model(flat)
        self.host.adapters_config[name] = config.replace(flat=True)
