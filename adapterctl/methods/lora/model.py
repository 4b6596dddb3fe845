"""LoRA, IA3, DoRA and VeRA in a model: one ``LoRALayer`` per adapted projection, at the family
spec's attention projections (``attn_matrices``) and AdapterHub's ``intermediate`` and ``output``
MLP projections; VeRA's shared matrices once per adapter under the base model's
``shared_parameters`` (AdapterHub's keys). On a fused projection (GPT-2's ``c_attn``) one layer
serves its keys (``q+k+v``), each adapter adapting the slices it names."""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ...core import registry
from ...core.composition import Average, BatchSplit, Parallel, Stack
from ...errors import AdapterConfigError
from ..base import Method
from .config import LoRAConfig
from .layer import IA3, LoRA, LoRALayer, features
from .vera import SharedMatrices, VeRA


class LoRAMethod(Method):
    name = "lora"
    supported_blocks = (Stack, Parallel, BatchSplit, Average)  # AdapterHub's LoRALinear
    containers = ("loras", "shared_parameters")
    can_merge = True
    combine_strategies = ("linear", "lora_linear_only_negate_b", "lora_delta_w_svd")
    supports_rows = True

    def add(self, name: str, config: LoRAConfig) -> None:
        host = self.host
        places = self._places(config)
        paths = {id(m): n for n, m in host.backbone.named_modules()}
        sites = []  # (layer, slices, groups)
        if config.target_modules:
            for path, (stack, idx, key, linear, slices) in linear_modules(host).items():
                if config.targets(path):
                    sites.append((self._layer((stack, idx, key), linear), slices, self._groups(stack)))
        for stack, idx, layer in () if config.target_modules else host.iter_layers():
            if idx in config.leave_out:
                continue
            spec = host.family.stacks[stack]
            for key, path, slices in _targets(places, spec):
                sites.append((self._layer((stack, idx, key), layer.get_submodule(path)), slices, self._groups(stack)))
        if config.target_modules and not sites:
            raise AdapterConfigError(f"target_modules {list(config.target_modules)} name no Linear module of "
                                     f"this {host.config.model_type} model; name e.g. "
                                     f"{next(iter(host.family.stacks.values())).projections['q']!r}")
        if any(slices is not None for _, slices, _ in sites) and (config.use_dora or config.is_vera):
            raise AdapterConfigError("DoRA and VeRA cannot adapt a fused projection (GPT-2's c_attn, GPT-NeoX's "
                                     "query_key_value); use LoRA or IA3 there")
        shared = self._add_shared(name, config, [site.linear for site, _, _ in sites]) if config.is_vera else None
        for site, slices, groups in sites:
            path = paths[id(site.linear)]
            module = self._module(config.at(path), site.linear, shared, slices, groups, config.scales_input(path))
            site.loras[name] = host.like_model(module, config.dtype)

    def _groups(self, stack: str) -> int:
        """The groups a fused output of the stack is laid out in (GPT-NeoX: per head), else 1."""
        spec = self.host.family.stacks.get(stack)
        return getattr(self.host.config, spec.fused_groups) if spec is not None and spec.fused_groups else 1

    def _layer(self, where: tuple, linear: nn.Module) -> LoRALayer:
        """The layer at ``(stack, layer index, key)``, made on first use."""
        if where not in self.layers:
            self.layers[where] = LoRALayer(where[1], self.host.context, linear)
        return self.layers[where]

    @staticmethod
    def _module(config: LoRAConfig, linear: nn.Module, shared: SharedMatrices | None, slices, groups: int,
                on_input: bool):
        """The module at one projection, ``config`` being that module's (``LoRAConfig.at``)."""
        if config.composition_mode == "scale":
            return IA3(config, linear, slices, groups, on_input)
        return VeRA(config, linear, shared) if shared is not None else LoRA(config, linear, slices, groups)

    def _add_shared(self, name: str, config: LoRAConfig, linears: list[nn.Linear]) -> SharedMatrices:
        """VeRA's A and B, sized for the adapter's widest projections (each takes its corner, as
        PEFT does; AdapterHub sizes them for the first and fails on others, e.g. GQA's v)."""
        pool = self._shared(create=True)
        sizes = [features(linear) for linear in linears]
        pool[name] = self.host.like_model(SharedMatrices(config, max(i for i, _ in sizes), max(o for _, o in sizes)),
                                          config.dtype)
        return pool[name]

    def _shared(self, create: bool = False) -> nn.ModuleDict:
        """The base model's ``shared_parameters`` (AdapterHub's place for VeRA's matrices), made
        by the first VeRA adapter."""
        backbone = self.host.backbone
        if create and not hasattr(backbone, "shared_parameters"):
            backbone.add_module("shared_parameters", nn.ModuleDict())
        return getattr(backbone, "shared_parameters", nn.ModuleDict())

    def modules(self, name: str) -> list[nn.Module]:
        shared = self._shared()
        return super().modules(name) + ([shared[name]] if name in shared else [])

    def delete(self, name: str) -> None:
        super().delete(name)
        if name in self._shared():
            del self._shared()[name]

    def _places(self, config: LoRAConfig) -> list[str]:
        """The projections (keys of the family spec) the config adapts; refuses ones it lacks."""
        if config.target_modules:
            return []
        places = list(config.attn_matrices) if config.selfattn_lora else []
        places += [key for key, on in (("intermediate", config.intermediate_lora), ("output", config.output_lora)) if on]
        for stack in self.host.family.stacks.values():
            missing = [key for key in places if key not in stack.projections]
            if missing:
                attention = [k for k in stack.projections if k not in ("intermediate", "output")]
                raise AdapterConfigError(
                    f"a {self.host.config.model_type} model has no {', '.join(map(repr, missing))} projection to adapt; "
                    f"attn_matrices may name {', '.join(attention)}"
                )
        return places

    def merge(self, name: str) -> None:
        for layer in self.layers.values():
            if name in layer.loras:
                layer.merge(name)

    def reset(self) -> None:
        for layer in self.layers.values():
            layer.reset()

    def merged(self) -> list[str]:
        return sorted({layer.merged for layer in self.layers.values() if layer.merged is not None})

    def average(self, name: str, inputs: dict[str, float], strategy: str) -> None:
        """``average_adapter``'s LoRA strategies at every projection (``methods/averaging.py``).

        ``lora_delta_w_svd``: the updates ``sum_i w_i s_i B_i A_i`` (``s = alpha / r``), cut by an
        SVD to the new adapter's rank ``r' = svd_rank``: ``A = V[:r']``, ``B = U[:, :r'] S[:r'] / s'``
        with ``s' = alpha / r'``, so the new adapter adds that rank-``r'`` update. AdapterHub
        splits the unscaled ``sum_i w_i B_i A_i`` and keeps ``alpha``, which is the same only when
        ``svd_rank == r`` (else its update is off by ``r / svd_rank``)."""
        config = self.host.adapters_config[name]
        if config.composition_mode != "add" or config.use_dora or config.vera_d is not None:
            raise AdapterConfigError(f"combine_strategy={strategy!r} averages plain LoRA adapters; "
                                     "average IA3, DoRA and VeRA adapters with combine_strategy='linear'")
        for layer in self.layers.values():
            if name not in layer.loras:
                continue
            target, loras = layer.loras[name], [(layer.loras[n], w) for n, w in inputs.items()]
            if strategy == "lora_linear_only_negate_b":
                target.lora_A.copy_(sum(abs(w) * m.lora_A for m, w in loras))
                target.lora_B.copy_(sum(w * m.lora_B for m, w in loras))
                continue
            if target.fused.slices is not None:
                raise AdapterConfigError("lora_delta_w_svd cannot split the update of a fused projection (GPT-2's "
                                         "c_attn) back into its per-slice pairs, as in AdapterHub; use 'linear'")
            delta = sum(w * m.scaling * m.delta_w for m, w in loras)
            rank = target.lora_A.shape[0]
            if rank > min(delta.shape):
                raise AdapterConfigError(f"svd_rank={rank} exceeds the largest rank {min(delta.shape)} of a "
                                         f"{tuple(delta.shape)} update; choose svd_rank <= {min(delta.shape)}")
            u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
            target.lora_A.copy_(vh[:rank])
            target.lora_B.copy_(u[:, :rank] * (s[:rank] / target.scaling))


def _targets(places: list[str], spec):
    """``(layer key, path, slices)`` per adapted projection: a plain one keyed by its key (by its
    path where a key names several), a fused one once, keyed by all its keys joined with ``+``,
    with the slices ``places`` enables."""
    done = set()
    for key in places:
        paths = spec.projections[key]
        for path in (paths,) if isinstance(paths, str) else paths:
            if path not in spec.fused:
                yield (key if isinstance(paths, str) else path), path, None
            elif path not in done:
                done.add(path)
                yield "+".join(spec.fused[path]), path, tuple(k in places for k in spec.fused[path])


def linear_modules(host) -> dict[str, tuple]:
    """Backbone-relative path -> ``(stack, layer index, key, module, slices)`` of every Linear or
    Conv1D of the backbone but the adapters' own, keyed as ``_targets`` keys a projection of the
    family spec (a fused one with all its slices), else by its path in the layer. One outside
    the layers (BERT's ``pooler.dense``) is at stack ``""`` and the index after the last layer,
    keyed by its path (AdapterDrop never skips it)."""
    containers = {c for spec in registry.methods().values() if isinstance(spec.method_class.containers, tuple)
                  for c in spec.method_class.containers}  # a union's are its parts
    paths = {id(m): n for n, m in host.backbone.named_modules()}
    layers = {paths[id(layer)]: (stack, idx, host.family.stacks[stack]) for stack, idx, layer in host.iter_layers()}
    found = {}
    for path, module in host.backbone.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)) or containers & set(path.split(".")):
            continue
        owner = next((p for p in layers if path.startswith(p + ".")), None)
        if owner is None:
            found[path] = ("", len(layers), path, module, None)
            continue
        stack, idx, spec = layers[owner]
        rel = path[len(owner) + 1:]
        keys = {p: key for key, p, _ in _targets(list(spec.projections), spec)}
        slices = (True,) * len(spec.fused[rel]) if rel in spec.fused else None
        found[path] = (stack, idx, keys.get(rel, rel), module, slices)
    return found
