"""LoRA and IA3 in a model: one ``LoRALayer`` per adapted projection, at the family spec's
attention projections (``attn_matrices``) and AdapterHub's ``intermediate`` and ``output`` MLP
projections."""

from __future__ import annotations

from ...core.composition import Average, BatchSplit, Parallel, Stack
from ...errors import AdapterConfigError
from ..base import Method
from .config import LoRAConfig
from .layer import LoRALayer, build


class LoRAMethod(Method):
    name = "lora"
    supported_blocks = (Stack, Parallel, BatchSplit, Average)  # AdapterHub's LoRALinear
    containers = ("loras",)
    can_merge = True

    def add(self, name: str, config: LoRAConfig) -> None:
        host = self.host
        places = self._places(config)
        for stack, idx, layer in host.iter_layers():
            if idx in config.leave_out:
                continue
            projections = host.family.stacks[stack].projections
            for key in places:
                if (stack, idx, key) not in self.layers:
                    self.layers[stack, idx, key] = LoRALayer(idx, host.context, layer.get_submodule(projections[key]))
                lora_layer = self.layers[stack, idx, key]
                linear = lora_layer.linear
                lora_layer.loras[name] = host.like_model(build(config, linear.in_features, linear.out_features))

    def _places(self, config: LoRAConfig) -> list[str]:
        """The projections (keys of the family spec) the config adapts; refuses ones it lacks."""
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
