"""Bottleneck adapters in a model: one ``BottleneckLayer`` per residual site that holds any
(AdapterHub's ``mh_adapter`` and ``output_adapter`` sites of the family spec, and an
encoder-decoder's ``cross_adapter`` after the decoder's cross-attention), the MAD-X
invertible blocks at the embeddings, Compacter's shared PHM tensors at the base model, and
AdapterFusion layers beside the adapters they fuse."""

from __future__ import annotations

import torch.nn as nn

from ...families.hooks import attach_residual_site
from ...families.spec import POST_LN
from .. import invertible
from ...errors import AdapterConfigError
from ..base import ALL_BLOCKS, Method, init_generator
from ..fusion.layer import Fusion
from .config import BnConfig
from .layer import Bottleneck, BottleneckLayer
from .phm import SHARED, PHMShared

SITES = ("mh_adapter", "cross_adapter", "output_adapter")


class BottleneckMethod(Method):
    name = "bottleneck"
    supported_blocks = ALL_BLOCKS
    containers = ("adapters", "invertible_adapters", SHARED)
    supports_rows = True

    def add(self, name: str, config: BnConfig) -> None:
        host = self.host
        layers = [(stack, idx, layer) for stack, idx, layer in host.iter_layers() if idx not in config.leave_out]
        # AdapterHub's sites per layer: a decoder without cross-attention has no cross_adapter site
        wanted = [key for key in SITES if getattr(config, key)]
        sites = {stack: [key for key in wanted if key in spec.sites] for stack, spec in host.family.stacks.items()}
        if not any(sites.values()):
            raise AdapterConfigError(f"cross_adapter=True places adapters after an encoder-decoder's cross-attention; "
                                     f"{host.config.model_type} has none: set mh_adapter=True or output_adapter=True")
        for _, idx, _ in layers:
            config.check_sizes(host.hidden_size, config.bottleneck_size(host.hidden_size, idx))
        if config.inv_adapter:  # MAD-X: the language adapter's coupling block at the embeddings
            embedding_size = getattr(host.config, "embedding_size", host.hidden_size)
            self.invertible_adapters()[name] = host.like_model(invertible.build(config, embedding_size))
        shared = None
        if config.phm_layer and (config.shared_phm_rule or config.shared_W_phm):  # Compacter's, once per adapter
            shared = PHMShared(config, host.hidden_size, config.bottleneck_size(host.hidden_size, 0))
            shared.init_(init_generator(config.init_weights_seed))
            self.shared_parameters()[name] = shared = host.like_model(shared)
        for stack, idx, layer in layers:
            for site_key in sites[stack]:
                module = Bottleneck(config, host.hidden_size, config.bottleneck_size(host.hidden_size, idx), shared)
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
        """Created with the first invertible adapter, at AdapterHub's place (``<prefix>.invertible_adapters``,
        ``<prefix>.encoder.invertible_adapters`` on encoder-decoders)."""
        owner = invertible.owner(self.host.backbone, self.host.family)
        if not hasattr(owner, "invertible_adapters"):
            modules = invertible.InvertibleAdapters(self.host.context)
            modules.attach(self.host.backbone.get_submodule(self.host.family.embeddings))
            owner.add_module("invertible_adapters", modules)
        return owner.invertible_adapters

    def _containers(self) -> list[nn.ModuleDict]:
        """The per-adapter containers beside the layers: invertible blocks, Compacter's shared tensors."""
        backbone = self.host.backbone
        found = [getattr(invertible.owner(backbone, self.host.family), "invertible_adapters", None),
                 getattr(backbone, SHARED, None)]
        return [c for c in found if c is not None]

    def shared_parameters(self) -> nn.ModuleDict:
        """Created with the first Compacter adapter, at AdapterHub's place (``<prefix>.shared_parameters``)."""
        backbone = self.host.backbone
        if not hasattr(backbone, SHARED):
            backbone.add_module(SHARED, nn.ModuleDict())
        return getattr(backbone, SHARED)

    def delete(self, name: str) -> None:
        super().delete(name)
        for container in self._containers():
            if name in container:
                del container[name]

    def modules(self, name: str) -> list[nn.Module]:
        """Its invertible block first, its shared PHM tensors, then its bottlenecks in layer order."""
        return [c[name] for c in self._containers() if name in c] + super().modules(name)

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
