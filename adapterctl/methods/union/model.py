"""A union adapter in a model: each part added by its own method under the adapter's name, so
every site runs its part when the adapter is active, and the parts train, save and load as one
(AdapterHub's keys: ``...adapters.<name>...``, ``...loras.<name>...`` side by side)."""

from __future__ import annotations

from functools import reduce

import torch.nn as nn

from ...core import registry
from ...errors import AdapterConfigError
from ..base import ALL_BLOCKS, Method
from .config import ConfigUnion


class UnionMethod(Method):
    name = "union"

    def __init__(self, host):
        super().__init__(host)
        self.parts: dict[str, list[Method]] = {}  # adapter name -> the methods holding its parts

    @property
    def containers(self) -> tuple[str, ...]:
        """Every method's key segments: a union's file may hold any of them."""
        return tuple(dict.fromkeys(c for spec in registry.methods().values() if spec.name != self.name
                                   for c in spec.method_class.containers))

    @property
    def supported_blocks(self) -> tuple[type, ...]:
        """The blocks every part's method runs (over this model's unions)."""
        methods = {type(m) for parts in self.parts.values() for m in parts}
        return tuple(b for b in ALL_BLOCKS if all(b in m.supported_blocks for m in methods))

    def add(self, name: str, config: ConfigUnion) -> None:
        self.parts[name] = []
        for i, part in enumerate(config.configs):
            method = self.host._method(registry.method_for(part).name)
            before = {id(m) for m in method.modules(name)}
            if method not in self.parts[name]:
                self.parts[name].append(method)
            method.add(name, part)
            after = {id(m) for m in method.modules(name)}
            if not before <= after:  # a module of an earlier part replaced: they meet at some place
                raise AdapterConfigError(
                    f"config {i} of the union ({method.name}) places modules where an earlier {method.name} part has "
                    "them already; give the parts different places (mh_adapter/output_adapter, leave_out)"
                )

    def delete(self, name: str) -> None:
        for method in self.parts.pop(name, []):
            method.delete(name)

    def file_tensors(self, tensors: dict) -> dict:
        """A file passed through each part's method (prefix tuning's ``.bin`` repeats its pool)."""
        methods = {type(m): m for parts in self.parts.values() for m in parts}.values()
        return reduce(lambda kept, method: method.file_tensors(kept), methods, tensors)

    def modules(self, name: str) -> list[nn.Module]:
        return reduce(lambda found, method: found + method.modules(name), self.parts.get(name, []), [])
