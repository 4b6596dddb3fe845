"""Bottleneck adapters in a model: one ``BottleneckLayer`` per residual site that holds any
(AdapterHub's ``mh_adapter`` and ``output_adapter`` sites of the family spec), the MAD-X
invertible blocks at the embeddings, and AdapterFusion layers beside the adapters they fuse."""

from __future__ import annotations

import torch.nn as nn

from ...families.hooks import attach_residual_site
from ...families.spec import POST_LN
from .. import invertible
from ..base import ALL_BLOCKS, Method
from ..fusion.layer import Fusion
from .config import BnConfig
from .layer import Bottleneck, BottleneckLayer

SITES = ("mh_adapter", "output_adapter")


class BottleneckMethod(Method):
    name = "bottleneck"
    supported_blocks = ALL_BLOCKS
    containers = ("adapters", "invertible_adapters")

    def add(self, name: str, config: BnConfig) -> None:
        host = self.host
        if config.inv_adapter:  # MAD-X: the language adapter's coupling block at the embeddings
            embedding_size = getattr(host.config, "embedding_size", host.hidden_size)
            self.invertible_adapters()[name] = host.like_model(invertible.build(config, embedding_size))
        for stack, idx, layer in host.iter_layers():
            if idx in config.leave_out:
                continue
            for site_key in SITES:
                if getattr(config, site_key):
                    module = Bottleneck(config, host.hidden_size, config.bottleneck_size(host.hidden_size, idx))
                    self._layer(stack, idx, layer, site_key).adapters[name] = host.like_model(module)

    def _layer(self, stack: str, idx: int, layer: nn.Module, site_key: str) -> BottleneckLayer:
        """The adapter layer at a site, created and hooked in on first use, its modules registered
        at the site's container under AdapterHub's names."""
        key = (stack, idx, site_key)
        if key not in self.layers:
            site = self.host.family.stacks[stack].sites[site_key]
            adapter_layer = BottleneckLayer(idx, self.host.context, post_ln=site.kind == POST_LN)
            try:
                container = layer.get_submodule(site.container)
                container.add_module("adapters", adapter_layer.adapters)
                container.add_module("adapter_fusion_layer", adapter_layer.adapter_fusion_layer)
            except AttributeError:
                layer.add_module(site.container, adapter_layer)
            attach_residual_site(layer, site, self.host.context, adapter_layer.site_forward)
            self.layers[key] = adapter_layer
        return self.layers[key]

    def invertible_adapters(self) -> invertible.InvertibleAdapters:
        """Created with the first invertible adapter, at AdapterHub's place (``<prefix>.invertible_adapters``)."""
        backbone = self.host.backbone
        if not hasattr(backbone, "invertible_adapters"):
            modules = invertible.InvertibleAdapters(self.host.context)
            modules.attach(backbone.get_submodule(self.host.family.embeddings))
            backbone.add_module("invertible_adapters", modules)
        return backbone.invertible_adapters

    def delete(self, name: str) -> None:
        super().delete(name)
        if name in getattr(self.host.backbone, "invertible_adapters", {}):
            del self.invertible_adapters()[name]

    def modules(self, name: str) -> list[nn.Module]:
        """Its invertible block first, then its bottlenecks in layer order."""
        inv = getattr(self.host.backbone, "invertible_adapters", {})
        return ([inv[name]] if name in inv else []) + super().modules(name)

    # -- AdapterFusion -----------------------------------------------------------------------

    def add_fusion(self, name: str, adapters: list[str], config, dropout: float) -> None:
        for layer in self.layers.values():
            if any(n in layer.adapters for n in adapters):
                layer.adapter_fusion_layer[name] = self.host.like_model(Fusion(config, self.host.hidden_size, dropout))

    def delete_fusion(self, name: str) -> None:
        for layer in self.layers.values():
            if name in layer.adapter_fusion_layer:
                del layer.adapter_fusion_layer[name]

    def fusion_modules(self, name: str) -> list[Fusion]:
        return [layer.adapter_fusion_layer[name] for _, layer in sorted(self.layers.items())
                if name in layer.adapter_fusion_layer]
