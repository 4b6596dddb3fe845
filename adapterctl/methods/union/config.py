"""A union of method configs (AdapterHub's ``ConfigUnion``): each part is added by its own method
under the adapter's one name, so the adapter trains, saves and loads as one.

Files hold AdapterHub's form, ``{"architecture": "union", "configs": [<part dict>, ...]}``. The
CLI's conf files name the parts by method instead (``configs: {bottleneck: {...}, lora: {...}}``)
so that ``adapter.configs.lora.r=16`` reaches one field; both forms are read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...core import registry
from ...core.config import AdapterConfig, architecture_name, config_from_dict, load_config, register_preset
from ...errors import AdapterConfigError


@dataclass(frozen=True, init=False)
class ConfigUnion(AdapterConfig):
    """``ConfigUnion(part, part, ...)``: each part a config, preset name, config string or dict.

    AdapterHub's rule for two parts of one method: only bottlenecks at different places
    (``mh_adapter`` and ``output_adapter`` both differ), unless one has a ``leave_out`` (then the
    model checks, when the adapter is added, that they do not meet in a layer).
    """

    configs: Any

    def __init__(self, *configs, **fields):
        if "configs" in fields:
            if configs:
                raise AdapterConfigError("give a union's configs either as arguments or as configs=..., not both")
            configs = fields.pop("configs")
        if fields:
            raise AdapterConfigError(f"unknown adapter config field(s) {', '.join(sorted(fields))} for union; "
                                     "change a part's field with replace(<field>=...) or give configs=[...]")
        if isinstance(configs, Mapping):  # the CLI's form: {method name: that part's fields}
            parts = tuple(_part(dict(fields, architecture=registry.methods()[method].architecture), method)
                          if method in registry.methods() else _unknown_method(method)
                          for method, fields in configs.items())
        else:
            parts = tuple(_part(c, i) for i, c in enumerate(configs))
        if len(parts) < 2:
            raise AdapterConfigError(f"a config union needs at least two configs, got {len(parts)}")
        object.__setattr__(self, "configs", parts)
        _check_pairs(parts)

    def replace(self, **changes) -> "ConfigUnion":
        """``configs=`` replaces the parts; any other field changes every part that has it."""
        if "configs" in changes:
            return ConfigUnion(configs=changes.pop("configs")).replace(**changes)
        unknown = [k for k in changes if not any(k in c.field_names() for c in self.configs)]
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {', '.join(sorted(unknown))} for any part of the union "
                f"({', '.join(c.method for c in self.configs)})"
            )
        return ConfigUnion(*(c.replace(**{k: v for k, v in changes.items() if k in c.field_names()})
                             for c in self.configs))

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "configs": [c.to_dict() for c in self.configs]}

    def to_file_dict(self) -> dict:
        return {"architecture": self.architecture, "configs": [c.to_file_dict() for c in self.configs]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ConfigUnion":
        unknown = sorted(set(d) - {"architecture", "configs"})
        if unknown or "configs" not in d:
            raise AdapterConfigError(
                f"a union config dict holds 'architecture': 'union' and 'configs' (a list of configs), "
                f"not {', '.join(unknown) or 'no configs'}"
            )
        return cls(configs=d["configs"])

    def placement_name(self) -> str:
        return "|".join(architecture_name(c) for c in self.configs)


def _part(spec, where) -> AdapterConfig:
    config = config_from_dict(spec) if isinstance(spec, Mapping) and "preset" not in spec else load_config(spec)
    if isinstance(config, ConfigUnion):
        raise AdapterConfigError(f"config {where} of a union is a union itself; list its parts instead")
    return config


def _unknown_method(method: str):
    raise AdapterConfigError(
        f"unknown method {method!r} in the union's configs; use the method names {', '.join(registry.methods())}"
    )


def _check_pairs(parts: tuple[AdapterConfig, ...]) -> None:
    for j, b in enumerate(parts):
        for i, a in enumerate(parts[:j]):
            if type(a) is not type(b) or getattr(a, "leave_out", ()) or getattr(b, "leave_out", ()):
                continue
            if a.method == "bottleneck" and a.mh_adapter != b.mh_adapter and a.output_adapter != b.output_adapter:
                continue
            raise AdapterConfigError(
                f"configs {i} and {j} of the union are both {a.method} adapters at the same places; two parts of one "
                "method must differ in placement (bottlenecks: mh_adapter and output_adapter, or leave_out)"
            )


# AdapterHub's MAMConfig (He et al. 2021: a wide prefix MLP + a parallel bottleneck) and
# UniPELTConfig (Mao et al. 2022: prefix, bottleneck and LoRA, each behind a learned gate).
register_preset("mam", ConfigUnion, configs=("prefix_tuning[bottleneck_size=800]", "par_bn"))
register_preset("unipelt", ConfigUnion, configs=("prefix_tuning[prefix_length=10, use_gating=True]",
                                                 "seq_bn[reduction_factor=16, use_gating=True]",
                                                 "lora[r=8, alpha=2, use_gating=True]"))
