"""The method registry: every adapter method by name, with its config class, its implementation
and AdapterHub's ``architecture`` key.

A method registers itself in its package's ``__init__`` (``methods/<method>/__init__.py``):

    register_method("lora", LoRAConfig, "adapterctl.methods.lora.model:LoRAMethod", architecture="lora")

The implementation may be given as a ``"module:Class"`` path, imported on first use, so that
configs (and the CLI, which reads them) load without torch. A config dict then finds its class
by its ``architecture`` key (``None`` is a bottleneck adapter, as in AdapterHub), and a config
object its method by its class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import AdapterConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_class: type
    implementation: str | type  # a ``methods.base.Method`` subclass, or its "module:Class" path
    architecture: str | None

    @property
    def method_class(self) -> type:
        if isinstance(self.implementation, str):
            module, _, attr = self.implementation.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.implementation


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_class: type, method_class: str | type, architecture: str | None = None) -> None:
    """Make a method known: configs of ``config_class`` (and config dicts whose ``architecture``
    key is ``architecture``) are added to models by ``method_class``."""
    if name in _METHODS:
        raise AdapterConfigError(f"an adapter method named {name!r} is already registered")
    if any(spec.architecture == architecture for spec in _METHODS.values()):
        raise AdapterConfigError(f"another method already reads configs with architecture={architecture!r}")
    config_class.method = name
    config_class.architecture = architecture
    _METHODS[name] = MethodSpec(name, config_class, method_class, architecture)


def load_builtin_methods() -> None:
    """Import the methods adapterctl ships (each registers itself)."""
    importlib.import_module("adapterctl.methods")


def methods() -> dict[str, MethodSpec]:
    load_builtin_methods()
    return _METHODS


def method_for(config) -> MethodSpec:
    """The registered method of a config object."""
    for spec in methods().values():
        if type(config) is spec.config_class:
            return spec
    raise AdapterConfigError(f"{type(config).__name__} is not the config of a registered adapter method")


def config_class_for(architecture: str | None) -> type:
    """The config class for AdapterHub's ``architecture`` key (or a method's name)."""
    for spec in methods().values():
        if architecture == spec.architecture or architecture == spec.name:
            return spec.config_class
    known = ", ".join(f"{s.name} (architecture {s.architecture!r})" for s in _METHODS.values())
    raise AdapterConfigError(f"adapter architecture {architecture!r} is not supported; adapterctl supports {known}")
